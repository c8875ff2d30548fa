"""Versioned KTables: history kept for a retention, out-of-order updates quiet downstream,
stream records joined with the version valid at their timestamp."""

from __future__ import annotations

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
