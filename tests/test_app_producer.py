"""`app.producer()`: code outside a worker (a web handler, a script) sends many records
over one connection, each acknowledged when its send returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest
from cluster import read_topic
from helpers import read

import streamkit as sk


async def test_every_send_is_acknowledged_on_return_and_concurrent_sends_share_flushes(
    memory_url: str,
) -> None:
    app = sk.App("sender", broker=memory_url)
    numbers = app.topic("numbers", value_type=int, partitions=2)
    async with app.producer() as producer:
        for i in range(20):
            await producer.send(numbers, key="one", value=i)
            assert read(app, numbers)[-1] == ("one", i)  # in the log when send returned
        await app.send("numbers", key="one", value=20)  # through the open producer
        await producer.send_many("numbers", [("two", 0), ("two", 1, 1_700_000_000_000)])
        # A hundred handlers at once: each returns once its own record is in.
        await asyncio.gather(*(producer.send(numbers, key=f"c{i}", value=i) for i in range(100)))
        assert len(read(app, numbers)) == 123
    assert [v for k, v in read(app, numbers) if k == "one"] == list(range(21))
    assert [v for k, v in read(app, numbers) if k == "two"] == [0, 1]
    timestamps = [r.timestamp for r in sk.MemoryBroker.for_url(memory_url).records("numbers")]
    assert 1_700_000_000_000 in timestamps
    with pytest.raises(sk.ConfigError, match="not open"):
        await producer.send(numbers, key="late", value=0)


def connections_to(port: int) -> set[int]:
    """Local ports of this process's TCP connections to the broker."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port
    }


@contextlib.contextmanager
def counting_connects() -> Iterator[list[object]]:
    """Every connection the event loop opens in the block (aiokafka opens them all with
    loop.create_connection), whatever other processes do to the same broker."""
    loop = asyncio.get_running_loop()
    opened: list[object] = []
    original = loop.create_connection

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[1:3])
        return await original(*args, **kwargs)

    with mock.patch.object(loop, "create_connection", create_connection):
        yield opened


async def test_a_producer_sends_many_records_over_one_connection_on_kafka(
    kafka_url: str, topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    port = int(kafka_url.rsplit(":", 1)[1])
    app = sk.App(topic_name("app"), broker=kafka_url, data_dir=tmp_path)
    numbers = app.topic(topic_name("numbers"), value_type=int, partitions=1)

    # Without it, every send connects anew (and leaves its sockets in TIME_WAIT).
    with counting_connects() as opened:
        for i in range(10):
            await app.send(numbers, key="k", value=i)
    assert len(opened) >= 10

    async with app.producer() as producer:
        await producer.send(numbers, key="k", value=10)
        open_at_first = connections_to(port)
        with counting_connects() as opened:
            for i in range(11, 211):
                await (producer.send if i % 2 else app.send)(numbers, key="k", value=i)
        assert opened == [], "a send opened a connection of its own"
        assert connections_to(port) == open_at_first
    assert len(open_at_first) <= 3  # bootstrap, the partition leader, the admin's
    records = await read_topic(kafka_url, numbers.name, 1)
    assert [int(r.value or b"") for r in records] == list(range(211))
