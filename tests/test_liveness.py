"""A blocked loop and a stuck partition are reported, with names."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from helpers import running, wait_for

import streamkit as sk


async def test_an_agent_blocking_the_loop_is_named(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = sk.App("blocky", broker=memory_url, loop_stall_warning_s=0.3)
    numbers = app.topic("numbers", value_type=int)
    done: list[int] = []

    @app.agent(numbers)
    async def sleepy(stream: sk.Stream) -> None:
        async for value in stream:
            time.sleep(1.0)  # noqa: ASYNC251 (the mistake being diagnosed)
            done.append(value)

    await app.send(numbers, key="k", value=1)
    with caplog.at_level(logging.WARNING, logger="streamkit.liveness"):
        async with running(app):
            await wait_for(lambda: done == [1])
    warnings = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(warnings) == 1
    assert "by agent sleepy" in warnings[0] and "test_liveness.py" in warnings[0]


async def test_a_stuck_partition_is_reported(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = sk.App("stuck", broker=memory_url, progress_warning_s=0.2)
    numbers = app.topic("numbers", value_type=int, partitions=2)
    release = asyncio.Event()

    @app.agent(numbers)
    async def waits(stream: sk.Stream) -> None:
        async for _ in stream:
            await release.wait()

    for i in range(20):
        await app.send(numbers, key="k", value=i, partition=1)
    with caplog.at_level(logging.WARNING, logger="streamkit.liveness"):
        async with running(app):
            await wait_for(lambda: any("has not moved" in r.getMessage() for r in caplog.records))
            release.set()
    message = next(r.getMessage() for r in caplog.records if "has not moved" in r.getMessage())
    assert "numbers[1] in task 0_1" in message
    assert not any("numbers[0]" in r.getMessage() for r in caplog.records)
