"""Who runs which task: each worker publishes its tasks to `{app_id}-status`.

`streamkit status` reads that compacted topic. It works on every broker (Tansu,
for one, returns no member assignments in DescribeGroups), and it shows what the
workers themselves believe they run, which is what an operator needs to know.
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


class WorkerStatus(BaseModel):
    worker: str
    host: str
    pid: int
    tasks: list[str]
    updated_ms: int
    processing_guarantee: str = "at_least_once"


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
    ) -> None:
        self._guarantee = processing_guarantee
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
            await asyncio.sleep(min(1.0, self._interval_s))

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
