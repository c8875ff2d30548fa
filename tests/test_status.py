"""Workers publish the tasks they own; `read_status` (behind `streamkit status`) sees them."""

from __future__ import annotations

from helpers import eventually, running

import streamkit as sk
from streamkit.runtime.status import read_status, status_topic
from streamkit.transport import transport_for


async def test_a_worker_publishes_its_tasks_and_retires_on_stop(memory_url: str) -> None:
    app = sk.App("watched", broker=memory_url)
    numbers = app.topic("numbers", value_type=int, partitions=3)

    @app.agent(numbers)
    async def consume(stream: sk.Stream) -> None:
        async for _ in stream:
            pass

    transport = transport_for(memory_url)
    seen: list[sk.runtime.status.WorkerStatus] = []

    async def poll() -> bool:
        seen[:] = await read_status(transport, status_topic(app.id))
        return bool(seen) and seen[0].tasks == ["0_0", "0_1", "0_2"]

    async with running(app) as worker:
        await eventually(poll, what="the worker's status")
        assert len(seen) == 1 and seen[0].tasks == ["0_0", "0_1", "0_2"]
        assert worker.status is not None and seen[0].worker == worker.status.worker_id
        assert seen[0].processing_guarantee == "at_least_once"
    assert await read_status(transport, status_topic(app.id)) == []


async def test_a_worker_reports_its_processing_guarantee(memory_url: str) -> None:
    app = sk.App("guaranteed", broker=memory_url, processing_guarantee="exactly_once")
    app.topic("numbers", value_type=int, partitions=1)
    transport = transport_for(memory_url)

    async def reported() -> bool:
        status = await read_status(transport, status_topic(app.id))
        return [s.processing_guarantee for s in status] == ["exactly_once"]

    async with running(app):
        await eventually(reported, what="the worker's status with its guarantee")
