"""Who runs which task: each worker publishes its tasks to `{app_id}-status`.

`streamkit status` reads that compacted topic. It works on every broker (Tansu,
for one, returns no member assignments in DescribeGroups), and it shows what the
workers themselves believe they run, which is what an operator needs to know.

A worker publishes on every change of its tasks and at least every
`status_interval_s` (a heartbeat), and retires its record with a tombstone when it
stops cleanly. One that stops publishing without retiring (killed, its host gone,
its event loop blocked) is marked gone once it has missed GONE_AFTER_BEATS
heartbeats of its own interval, which its record states.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

from pydantic import BaseModel

from ..topic import Topic
from ..topology import TaskId
from ..transport.base import TopicPartition, Transport
from .record_writer import RecordWriter

log = logging.getLogger("streamkit.status")

STATUS_INTERVAL_S = 10.0
# A worker silent for this many of its heartbeat intervals is gone.
GONE_AFTER_BEATS = 3


class WorkerStatus(BaseModel):
    worker: str
    host: str
    pid: int
    tasks: list[str]
    updated_ms: int
    processing_guarantee: str = "at_least_once"
    # How often it publishes (records of older workers lack it: they used the default).
    heartbeat_s: float = STATUS_INTERVAL_S
    # Its web server's host:port (queries, /metrics, health), if it runs one.
    web: str | None = None

    @property
    def gone_after_s(self) -> float:
        return GONE_AFTER_BEATS * self.heartbeat_s

    def silent_for_s(self, now_ms: float) -> float:
        return max(0.0, (now_ms - self.updated_ms) / 1000)

    def gone(self, now_ms: float) -> bool:
        """Silent for longer than its stated timeout: stopped without retiring, or stuck."""
        return self.silent_for_s(now_ms) > self.gone_after_s


def status_topic(app_id: str) -> Topic:
    return Topic(
        f"{app_id}-status",
        key_type=str,
        value_type=WorkerStatus,
        declared_partitions=1,
        config={"cleanup.policy": "compact"},
    )


class StatusReporter:
    def __init__(
        self,
        topic: Topic,
        writer: RecordWriter,
        owned_tasks: Callable[[], Iterable[TaskId]],
        interval_s: float = STATUS_INTERVAL_S,
        processing_guarantee: str = "at_least_once",
        web: str | None = None,
    ) -> None:
        self._guarantee = processing_guarantee
        self._web = web
        self._topic = topic
        self._writer = writer
        self._owned_tasks = owned_tasks
        self._interval_s = interval_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def _publish(self, tasks: list[str]) -> None:
        status = WorkerStatus(
            worker=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            tasks=tasks,
            updated_ms=int(time.time() * 1000),
            processing_guarantee=self._guarantee,
            heartbeat_s=self._interval_s,
            web=self._web,
        )
        self._writer.write(self._topic, self.worker_id, status)

    async def run(self) -> None:
        """Publish on every change of the owned tasks, and every interval as a heartbeat."""
        published: list[str] | None = None
        last = 0.0
        while True:
            tasks = [str(t) for t in self._owned_tasks()]
            now = time.monotonic()
            if tasks != published or now - last >= self._interval_s:
                self._publish(tasks)
                published, last = tasks, now
            await asyncio.sleep(min(1.0, self._interval_s / 4))

    def retire(self) -> None:
        """A tombstone: this worker left cleanly."""
        self._writer.write(self._topic, self.worker_id, None)


async def read_status(transport: Transport, topic: Topic) -> list[WorkerStatus]:
    """The latest status of every worker that has not retired."""
    tp = TopicPartition(topic.name, 0)
    admin = transport.admin()
    try:
        if topic.name not in await admin.partition_counts([topic.name]):
            return []  # no worker of this app has started on this broker yet
    finally:
        await admin.close()
    reader = transport.reader()
    await reader.start()
    latest: dict[str, WorkerStatus | None] = {}
    try:
        first, end = await reader.offsets(tp)
        reader.assign({tp: first})
        while reader.position(tp) < end:
            for record in (await reader.getmany(timeout_s=1.0, max_records=10_000)).get(tp, ()):
                key, value = topic.decode(record)
                latest[key] = value
    finally:
        await reader.stop()
    return sorted((s for s in latest.values() if s is not None), key=lambda s: s.worker)


def describe(
    app_id: str, broker: str, workers: list[WorkerStatus], all_tasks: list[str], now_ms: float
) -> list[str]:
    """`streamkit status`'s lines: live workers first, then gone ones, then the tasks no
    live worker owns. Tasks of a gone worker count as not owned."""
    live = [w for w in workers if not w.gone(now_ms)]
    gone = [w for w in workers if w.gone(now_ms)]
    owned = {t for w in live for t in w.tasks}
    known = set(all_tasks)
    head = f"app {app_id} on {broker}: {len(live)} live worker{'s' if len(live) != 1 else ''}"
    if gone:
        head += f", {len(gone)} gone"
    lines = [f"{head}, {len(owned & known)}/{len(all_tasks)} tasks owned"]
    for w in live:
        lines.append(
            f"  {w.worker:<28} live  {w.processing_guarantee}  tasks: {' '.join(w.tasks) or '-'}"
            f"  (seen {w.silent_for_s(now_ms):.0f} s ago; beats every {w.heartbeat_s:g} s)"
            + (f"  web http://{w.web}" if w.web else "")
        )
    for w in gone:
        lines.append(
            f"  {w.worker:<28} gone  no heartbeat for {w.silent_for_s(now_ms):.0f} s (gone after "
            f"{w.gone_after_s:g} s: stopped without retiring, killed, or stuck); last reported "
            f"tasks: {' '.join(w.tasks) or '-'}"
        )
    unowned = [t for t in all_tasks if t not in owned]
    if unowned:
        lines.append(f"  not owned by any live worker: {' '.join(unowned)}")
    return lines
