"""Versioned KTables: history kept for a retention, out-of-order updates quiet downstream,
stream records joined with the version valid at their timestamp."""

from __future__ import annotations

from pathlib import Path

from helpers import read, running, wait_for

import streamkit as sk
from streamkit.testing import TopologyTestDriver


def _prices() -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("versioned-prices")
    prices, orders, changes = (
        app.topic(n, key_type=str, value_type=int) for n in ("prices", "orders", "changes")
    )
    priced = app.topic("priced", key_type=str, value_type=str)
    table = app.ktable(prices, history_retention=60)
    table.to_stream().to(changes)
    app.stream(orders).left_join(table, lambda qty, price: f"{qty} at {price}").to(priced)
    return app, prices, orders, priced, changes


def test_a_stream_record_joins_the_version_valid_at_its_timestamp() -> None:
    app, prices, orders, priced, _ = _prices()
    with TopologyTestDriver(app) as driver:
        driver.pipe(prices, "tea", 3, timestamp_ms=1_000)
        driver.pipe(prices, "tea", 4, timestamp_ms=5_000)
        driver.pipe(orders, "tea", 1, timestamp_ms=2_000)  # late order: the old price
        driver.pipe(orders, "tea", 2, timestamp_ms=6_000)
        driver.pipe(orders, "tea", 9, timestamp_ms=500)  # before any price
        assert driver.read_output(priced) == [
            ("tea", "1 at 3"),
            ("tea", "2 at 4"),
            ("tea", "9 at None"),
        ]


def test_out_of_order_updates_enter_the_history_but_change_nothing_downstream() -> None:
    app, prices, orders, priced, changes = _prices()
    with TopologyTestDriver(app) as driver:
        driver.pipe(prices, "tea", 4, timestamp_ms=5_000)
        driver.pipe(prices, "tea", 3, timestamp_ms=1_000)  # out of order
        assert driver.read_output(changes) == [("tea", 4)]
        assert driver.timestamped_store("prices") == {"tea": (4, 5_000)}
        driver.pipe(orders, "tea", 1, timestamp_ms=2_000)
        assert driver.read_output(priced) == [("tea", "1 at 3")]


def test_history_older_than_the_retention_is_forgotten_and_late_updates_dropped() -> None:
    app, prices, orders, priced, _ = _prices()
    with TopologyTestDriver(app) as driver:
        driver.pipe(prices, "tea", 3, timestamp_ms=0)
        driver.pipe(prices, "tea", 4, timestamp_ms=10_000)
        driver.pipe(prices, "tea", 5, timestamp_ms=100_000)  # stream time 100 s: keep 40 s on
        driver.pipe(orders, "tea", 1, timestamp_ms=50_000)  # 4 was valid then: still known
        driver.pipe(orders, "tea", 2, timestamp_ms=5_000)  # 3's version is forgotten
        assert driver.read_output(priced) == [("tea", "1 at 4"), ("tea", "2 at None")]
        driver.pipe(prices, "tea", 7, timestamp_ms=20_000)  # older than the retention
    dropped = app.metrics.value(
        "dropped_records",
        node="KTABLE-SOURCE-0000000001",
        reason="older than the versioned table's history retention",
    )
    assert dropped == 1


def _restoring_app(url: str, data_dir: Path) -> tuple[sk.App, dict[str, sk.Topic]]:
    """A plain and a versioned table, joined by a stream and with each other."""
    app = sk.App("tables-restored", broker=url, data_dir=data_dir, commit_interval_s=0.05)
    topics = {
        name: app.topic(name, key_type=str, value_type=str, partitions=2)
        for name in ("names", "prices", "orders", "priced", "labels")
    }
    names = app.ktable(topics["names"])
    prices = app.ktable(topics["prices"], history_retention=3600)
    app.stream(topics["orders"]).join(prices, lambda qty, price: f"{qty}@{price}").to(
        topics["priced"]
    )
    names.join(prices, lambda name, price: f"{name}:{price}").to_stream().to(topics["labels"])
    return app, topics


def _remove_state_files(data_dir: Path) -> None:
    for path in data_dir.glob("tables-restored/*/*.sqlite*"):
        path.unlink()


def _labels(app: sk.App, topic: sk.Topic) -> list[tuple[str, str, int]]:
    """(key, value, timestamp) of a topic on the memory broker."""
    broker = sk.MemoryBroker.for_url(app.settings.broker)
    if broker.partition_count(topic.name) is None:
        return []
    return [(*topic.decode(r), r.timestamp) for r in broker.records(topic.name)]


async def test_tables_restored_from_their_topics_keep_timestamps_and_history(
    memory_url: str, tmp_path: Path
) -> None:
    """A KTable restored from its source topic keeps each row's record timestamp (a join
    result is stamped with the later row); a versioned table restored from its own
    changelog keeps its history (a late order gets the price of its time)."""
    app, topics = _restoring_app(memory_url, tmp_path)
    async with running(app):
        await app.send(topics["names"], key="tea", value="Tea", timestamp_ms=9_000)
        await app.send(topics["prices"], key="tea", value="3", timestamp_ms=1_000)
        await app.send(topics["prices"], key="tea", value="4", timestamp_ms=5_000)
        # Records are taken in timestamp order: both prices, then the name.
        await wait_for(lambda: read(app, topics["labels"]) == [("tea", "Tea:4")], what="label")
    _remove_state_files(tmp_path)  # only the topics and changelogs remain
    app2, topics2 = _restoring_app(memory_url, tmp_path)
    async with running(app2):
        await app2.send(topics2["orders"], key="tea", value="2", timestamp_ms=2_000)
        await wait_for(lambda: read(app2, topics2["priced"]) == [("tea", "2@3")], what="as of")
        await app2.send(topics2["prices"], key="tea", value="5", timestamp_ms=6_000)
        await wait_for(
            lambda: ("tea", "Tea:5", 9_000) in _labels(app2, topics2["labels"]),
            what="a join stamped with the restored row's time",
        )
