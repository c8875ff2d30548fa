"""Test helpers: run a worker in-process and wait on conditions with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from streamkit import App, MemoryBroker, Topic
from streamkit.runtime.worker import Worker
from streamkit.state.sqlite_store import store_path


async def wait_for(
    condition: Callable[[], bool],
    timeout: float = 10.0,  # noqa: ASYNC109 (a deadline to poll against, not a cancel scope)
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(app: App, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker for the block; stop it gracefully after and surface its failure."""
    worker = Worker(app, **options)
    job = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(job, 20)


def read(app: App, topic: Topic) -> list[tuple[Any, Any]]:
    """Every (key, value) of a topic on the app's memory broker, partition by partition."""
    broker = MemoryBroker.for_url(app.settings.broker)
    if broker.partition_count(topic.name) is None:
        return []  # the worker has not created it yet
    return [topic.decode(r) for r in broker.records(topic.name)]


def committed(app: App, topic: Topic) -> dict[int, int | None]:
    from streamkit.transport import TopicPartition

    broker = MemoryBroker.for_url(app.settings.broker)
    return {
        p: broker.committed(app.id, TopicPartition(topic.name, p)) for p in range(topic.partitions)
    }


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 (a deadline to poll against)
    what: str = "condition",
) -> None:
    """Like `wait_for`, for a condition that has to await (e.g. read a topic)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def table_in_files(data_dir: Path, app: App, name: str = "counts") -> dict[Any, Any]:
    """A table as its SQLite files under `data_dir` hold it (every task's shard)."""
    table = app.tables[name]
    values: dict[Any, Any] = {}
    for task in app.topology().task_ids():
        path = store_path(data_dir / app.id, task, name)
        if not path.exists():
            continue
        with contextlib.closing(sqlite3.connect(path)) as db:
            for key, value in db.execute("SELECT key, value FROM kv"):
                values[table.changelog.key_serde.deserialize(key)] = (
                    table.changelog.value_serde.deserialize(value)
                )
    return values


def scrape(port: int) -> str:
    """The text of a worker's `/metrics` page on its metrics_port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def samples(text: str, name: str) -> dict[str, float]:
    """Label set (as written) -> value, of every sample of `name` in a scrape."""
    pattern = rf"^{name}(\{{[^}}]*\}})? (\S+)$"
    return {m[1] or "": float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}
