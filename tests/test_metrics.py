"""The app's Prometheus metrics (docs/operating.md): what an operator scrapes moves as
the worker works, and consumer lag drains to 0 once the input stops.

In-process workers on memory:// for most; one in-process worker on the session's
Tansu broker for lag as aiokafka reports it (the fetch's high watermark).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import create_topic, produce, wait_until
from helpers import running, samples, scrape, wait_for

import streamkit as sk
from streamkit.devbroker import free_port
from streamkit.runtime.worker import Worker


def gated_app(url: str, data_dir: Path, **settings: Any) -> tuple[sk.App, asyncio.Event]:
    """Counts clicks per user in a table; each agent waits at the gate before its first
    record, so a test can look at the worker while input waits."""
    app = sk.App("metered", broker=url, data_dir=data_dir, **settings)
    clicks = app.topic("clicks", value_type=str, partitions=2, on_error="skip")
    counts = app.table("counts", default=int)
    gate = asyncio.Event()

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> None:
        await gate.wait()
        async for user, _ in stream.items():
            counts[user] += 1

    return app, gate


async def test_the_scrape_shows_lag_queues_and_work_and_lag_drains_to_zero(
    memory_url: str, tmp_path: Path
) -> None:
    port = free_port()
    app, gate = gated_app(
        memory_url, tmp_path, metrics_port=port, max_poll_records=50, partition_buffer_records=100
    )
    records = [(f"user{i % 10}", "click") for i in range(400)]
    await app.send_many("clicks", records)
    sk.MemoryBroker.for_url(memory_url).append("clicks", 0, b"user0", b"\xff not utf-8")

    async with running(app):
        # Every record waits: the agents are held at the gate.
        def lagging() -> bool:
            return app.metrics.value("consumer_lag_records") == 401

        await wait_for(lagging, what="lag of every record")
        text = await asyncio.to_thread(scrape, port)
        lag = samples(text, "streamkit_consumer_lag_records")
        assert sum(lag.values()) == 401 and len(lag) == 2, lag
        # Back-pressure: a full queue (100 records) paused its partition.
        await wait_for(lambda: app.metrics.value("paused_partitions") == 2, what="pauses")
        assert 0 < app.metrics.value("queued_records") <= 2 * 150

        gate.set()
        await wait_for(lambda: app.metrics.value("consumer_lag_records") == 0, what="no lag")
        # Committed: the state files hold the 10 users (store keys are read from them).
        await wait_for(lambda: app.metrics.value("store_keys") == 10, what="committed state")
        text = await asyncio.to_thread(scrape, port)

    processed = samples(text, "streamkit_records_processed_total")
    assert sum(processed.values()) == 401
    assert set(processed) == {'{task="0_0",topic="clicks"}', '{task="0_1",topic="clicks"}'}
    assert set(samples(text, "streamkit_consumer_lag_records").values()) == {0.0}
    assert samples(text, "streamkit_queued_records") == {'{task="0_0"}': 0, '{task="0_1"}': 0}
    assert samples(text, "streamkit_paused_partitions") == {"": 0}
    # One observation per batch: at most 400 / 50 batches of good records and the bad one.
    batches = sum(samples(text, "streamkit_batch_processing_seconds_count").values())
    assert 8 <= batches <= 10, batches
    assert samples(text, "streamkit_rebalance_seconds_count") == {"": 1}
    assert samples(text, "streamkit_skipped_records_total") == {'{topic="clicks"}': 1}
    assert samples(text, "streamkit_bad_records_total") == {'{policy="skip",topic="clicks"}': 1}
    assert sum(samples(text, "streamkit_commit_seconds_count").values()) >= 2
    # The table's files: 10 users over two tasks, some bytes on disk.
    assert sum(samples(text, "streamkit_store_keys").values()) == 10
    assert all(v > 0 for v in samples(text, "streamkit_store_size_bytes").values())
    assert "process_resident_memory_bytes" in text


async def test_a_restore_is_counted_and_ends_with_nothing_remaining(
    memory_url: str, tmp_path: Path
) -> None:
    app, gate = gated_app(memory_url, tmp_path / "first")
    gate.set()
    await app.send_many("clicks", [(f"user{i % 7}", "click") for i in range(100)])
    async with running(app):
        await wait_for(lambda: app.metrics.value("records_processed") == 100)
    changelog = sk.MemoryBroker.for_url(memory_url).records("metered-counts-changelog")

    # A new worker with no local state replays the changelog.
    again, gate = gated_app(memory_url, tmp_path / "second")
    gate.set()
    async with running(again):
        await wait_for(lambda: again.metrics.value("restored_records") == len(changelog))
        assert again.metrics.value("restore_remaining_records") == 0
        assert again.metrics.value("restore_records_per_second") > 0
        assert again.metrics.value("store_keys") == 7


async def test_a_blocked_event_loop_shows_in_a_scrape_while_it_lasts(
    memory_url: str, tmp_path: Path
) -> None:
    port = free_port()
    app = sk.App("blocky", broker=memory_url, data_dir=tmp_path, metrics_port=port)
    ticks = app.topic("ticks", value_type=int, partitions=1)
    seen_blocked = threading.Event()
    worst: list[float] = []

    @app.agent(ticks)
    async def block(stream: sk.Stream) -> None:
        async for _ in stream:
            seen_blocked.wait(timeout=30)  # blocks the loop until a scrape saw it

    def watch() -> None:
        # From another thread, as Prometheus would: the loop cannot answer meanwhile.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen_blocked.is_set():
            try:
                lag = samples(scrape(port), "streamkit_event_loop_lag_seconds").get("", 0.0)
            except OSError:
                lag = 0.0  # not serving yet
            worst.append(lag)
            if lag >= 0.6:
                seen_blocked.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    async with running(app):
        watcher.start()
        await app.send(ticks, key="k", value=1)
        await asyncio.to_thread(watcher.join)
        assert max(worst) >= 0.6, worst[-5:]
        await wait_for(lambda: app.metrics.value("event_loop_lag_seconds") < 0.6, what="unblocked")


async def test_a_failed_delivery_is_counted_as_a_producer_error(
    memory_url: str, tmp_path: Path
) -> None:
    app = sk.App("lossy", broker=memory_url, data_dir=tmp_path)
    numbers = app.topic("numbers", value_type=int, partitions=1)
    out = app.topic("out", value_type=int, partitions=1)
    broker = sk.MemoryBroker.for_url(memory_url)

    @app.agent(numbers, sink=out)
    async def copy(stream: sk.Stream) -> Any:
        async for n in stream:
            broker.delete_topic("out")  # the sink vanishes under the worker
            yield n

    await app.send(numbers, key="k", value=1)
    with pytest.raises(sk.TransportError, match="unknown topic 'out'"):
        await asyncio.wait_for(Worker(app).run(), 20)
    assert app.metrics.value("producer_errors", topic="out") == 1


@pytest.mark.timeout(60)
async def test_lag_on_kafka_drains_to_zero_when_the_input_stops(
    kafka_url: str, topic_name: Any, tmp_path: Path
) -> None:
    source = topic_name("clicks")
    await create_topic(kafka_url, source, 2)
    app = sk.App(
        topic_name("app"),
        broker=kafka_url,
        data_dir=tmp_path,
        kafka_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        commit_interval_s=0.2,
    )
    clicks = app.topic(source, value_type=str, partitions=2)
    gate = asyncio.Event()

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> None:
        await gate.wait()
        async for _ in stream:
            pass

    await produce(kafka_url, source, 2, [(f"u{i}".encode(), b'"c"') for i in range(1_000)])
    async with running(app):
        await wait_until(
            lambda: app.metrics.value("consumer_lag_records") == 1_000,
            timeout=30,
            what="the lag of every record, from the fetch's high watermark",
            details=lambda: str(app.metrics.value("consumer_lag_records")),
        )
        gate.set()
        await wait_until(
            lambda: (
                app.metrics.value("consumer_lag_records") == 0
                and app.metrics.value("records_processed") == 1_000
            ),
            timeout=30,
            what="the lag to drain",
            details=lambda: str(app.metrics.value("consumer_lag_records")),
        )
        assert app.metrics.value("rebalance_seconds_count") == 1
        await wait_until(
            lambda: app.metrics.value("commit_seconds_count") >= 2,
            timeout=10,
            what="both tasks' commits",
        )


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    from streamkit.metrics import Metrics

    exported = set()
    for family in Metrics().registry.collect():
        if family.name.startswith("streamkit_"):
            suffix = "_total" if family.type == "counter" else ""
            exported.add(family.name + suffix)
    page = (Path(__file__).parent.parent / "docs" / "operating.md").read_text()
    documented = set(re.findall(r"^\| `(streamkit_\w+)` \|", page, re.MULTILINE))
    assert documented == exported
