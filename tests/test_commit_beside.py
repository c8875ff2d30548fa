"""A stateless at-least-once task commits beside its processing (memory://).

The commit waits for the broker's acknowledgements and then commits the offsets it
reached when it began; records arriving meanwhile are processed rather than held
up. What must not change: an offset is committed only once every output before it
is acknowledged (DESIGN.md invariant 4), a failed delivery stops the worker even if
no other record comes, and a graceful stop commits everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from helpers import committed, read, wait_for

import streamkit as sk
from streamkit.errors import TransportError
from streamkit.runtime.worker import Worker
from streamkit.transport import TopicPartition


def _echo_app(url: str) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("beside", broker=url, commit_interval_s=0.02)
    numbers = app.topic("numbers", key_type=str, value_type=int, partitions=1)
    echoed = app.topic("echoed", key_type=str, value_type=int, partitions=1)

    @app.agent(numbers, sink=echoed)
    async def echo(stream: sk.Stream) -> Any:
        async for n in stream:
            yield n

    return app, numbers, echoed


def _hold_flushes(worker: Worker) -> tuple[asyncio.Event, list[int]]:
    """Hold every flush of the worker's producer until `gate` is set; count them."""
    assert worker.writer is not None
    producer = worker.writer.producer
    flush = producer.flush
    gate = asyncio.Event()
    started: list[int] = []

    async def held() -> Mapping[TopicPartition, int]:
        started.append(1)
        await gate.wait()
        return await flush()

    producer.flush = held  # type: ignore[method-assign]
    return gate, started


async def test_records_are_processed_while_a_commit_waits_for_the_broker(
    memory_url: str,
) -> None:
    app, numbers, echoed = _echo_app(memory_url)
    await app.send_many(numbers, [("k", i) for i in range(10)])
    worker = Worker(app)
    job = asyncio.create_task(worker.run())
    await wait_for(lambda: len(read(app, echoed)) == 10, what="the first 10 echoed")
    gate, started = _hold_flushes(worker)
    await wait_for(lambda: bool(started), what="a commit waiting for acknowledgements")
    held_at = committed(app, numbers)[0]
    await app.send_many(numbers, [("k", i) for i in range(10, 30)])
    # Processed while the commit waits; its offsets stay where they were.
    await wait_for(lambda: len(read(app, echoed)) == 30, what="the next 20 echoed meanwhile")
    assert committed(app, numbers)[0] == held_at
    assert held_at is None or held_at <= 10
    gate.set()
    await wait_for(lambda: committed(app, numbers)[0] == 30, what="every offset committed")
    worker.stop()
    await asyncio.wait_for(job, 20)
    assert [v for _, v in read(app, echoed)] == list(range(30))


async def test_a_delivery_that_fails_during_such_a_commit_stops_the_worker(
    memory_url: str,
) -> None:
    app, numbers, echoed = _echo_app(memory_url)
    await app.send_many(numbers, [("k", i) for i in range(5)])
    worker = Worker(app)
    job = asyncio.create_task(worker.run())
    await wait_for(lambda: len(read(app, echoed)) == 5, what="5 echoed")
    assert worker.writer is not None

    async def failed() -> Mapping[TopicPartition, int]:
        raise TransportError("producing to echoed[0] failed: the broker is gone")

    await app.send_many(numbers, [("k", 5)])  # something to commit, then no more input
    worker.writer.producer.flush = failed  # type: ignore[method-assign]
    with pytest.raises(TransportError, match="the broker is gone"):
        await asyncio.wait_for(job, 20)
    assert (committed(app, numbers)[0] or 0) <= 5
