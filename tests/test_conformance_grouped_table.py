"""Kafka Streams conformance: reduce, count and aggregate of a grouped KTable.

Ported from org.apache.kafka.streams.kstream.internals.KTableReduceTest and
KGroupedTableImplTest: a row that changes within its group is subtracted, then
added (KIP-904); the result carries the larger of the update's and the previous
aggregate's timestamp.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, string_init, string_topics, tostring_adder, tostring_remover

import streamkit as sk
from streamkit.testing import TopologyTestDriver


def test_KTableReduceTest_shouldAddAndSubtract() -> None:
    """Kafka drives KTableReduce with Changes ({a}, null), ({b}, {a}), (null, {b}); here a
    source table whose row A is "a", then "b", then deleted gives the same Changes."""
    app = sk.App("ktable-reduce")
    (topic,) = string_topics(app, "topic")
    out = app.topic("out", key_type=str, value_type=Any)
    (
        app.ktable(topic)
        .group_by(lambda k, v: (k, frozenset({v})), key_type=str)
        .reduce(lambda a, b: a | b, lambda a, b: a - b, name="myStore")
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "A", "a", timestamp_ms=10)
        assert driver.timestamped_store("myStore") == {"A": ({"a"}, 10)}
        driver.pipe(topic, "A", "b", timestamp_ms=15)
        assert driver.timestamped_store("myStore") == {"A": ({"b"}, 15)}
        driver.pipe(topic, "A", None, timestamp_ms=12)
        assert driver.timestamped_store("myStore") == {"A": (frozenset(), 15)}
        got = [(k, set(v), ts) for k, v, ts in records(driver, out)]  # JSON: lists
        assert got == [("A", {"a"}, 10), ("A", {"b"}, 15), ("A", set(), 15)]


def _reducing(store: str | None) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("kgrouped-table-reduce")
    topic = app.topic("topic", key_type=str, value_type=float)
    out = app.topic("out", key_type=str, value_type=int)
    (
        app.ktable(topic, name="store")
        .group_by(lambda k, v: (k, int(v)), key_type=str)  # intProjection
        .reduce(lambda a, b: a + b, lambda a, b: a - b, name=store)  # INTEGER_ADDER, _SUBTRACTOR
        .to_stream()
        .to(out)
    )
    return app, topic, out


@pytest.mark.parametrize("store", ["reduced", None])
def test_KGroupedTableImplTest_shouldReduce(store: str | None) -> None:
    """With store=None, shouldReduceWithInternalStoreName; assertReduced checks the last
    result per key."""
    app, topic, out = _reducing(store)
    with TopologyTestDriver(app) as driver:
        last: dict[str, tuple[int, int]] = {}
        driver.pipe(topic, "A", 1.1, timestamp_ms=10)
        driver.pipe(topic, "B", 2.2, timestamp_ms=11)
        last.update((k, (v, ts)) for k, v, ts in records(driver, out))
        assert last == {"A": (1, 10), "B": (2, 11)}
        for key, value, ts in [("A", 2.6, 30), ("B", 1.3, 30), ("A", 5.7, 50), ("B", 6.2, 20)]:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        last.update((k, (v, ts)) for k, v, ts in records(driver, out))
        assert last == {"A": (5, 50), "B": (6, 30)}
        if store is not None:
            assert driver.timestamped_store(store) == {"A": (5, 50), "B": (6, 30)}


def _process_data(driver: TopologyTestDriver, topic: sk.Topic) -> None:
    for key, value, ts in [("A", "1", 10), ("B", "1", 50), ("C", "1", 30), ("D", "2", 40)]:
        driver.pipe(topic, key, value, timestamp_ms=ts)
    driver.pipe(topic, "E", "2", timestamp_ms=60)


def test_KGroupedTableImplTest_shouldCountAndMaterializeResults() -> None:
    app = sk.App("kgrouped-table-count")
    (topic,) = string_topics(app, "topic")
    app.ktable(topic).group_by(lambda k, v: (v, v), key_type=str).count(name="count")
    with TopologyTestDriver(app) as driver:
        _process_data(driver, topic)
        assert driver.timestamped_store("count") == {"1": (3, 50), "2": (2, 60)}


def test_KGroupedTableImplTest_shouldAggregateAndMaterializeResults() -> None:
    app = sk.App("kgrouped-table-aggregate")
    (topic,) = string_topics(app, "topic")
    (
        app.ktable(topic)
        .group_by(lambda k, v: (v, v), key_type=str)
        .aggregate(string_init, tostring_adder, tostring_remover, name="aggregate")
    )
    with TopologyTestDriver(app) as driver:
        _process_data(driver, topic)
        assert driver.store("aggregate") == {"1": "0+1+1+1", "2": "0+2+2"}
        assert driver.timestamped_store("aggregate") == {"1": ("0+1+1+1", 50), "2": ("0+2+2", 60)}


@pytest.mark.parametrize("how", ["reduce", "aggregate"])
def test_grouped_table_aggregate_subtracted_to_none_is_deleted(how: str) -> None:
    """Kafka's KTableReduce / KTableAggregate processors: an aggregate the subtractor
    turns into null is deleted and forwarded as a deletion; the next row to join the
    group starts afresh (the reducer's first value, or the initializer), stamped with
    its own timestamp."""
    app = sk.App(f"grouped-table-{how}-to-none")
    topic = app.topic("topic", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    grouped = app.ktable(topic).group_by(lambda k, v: ("g", v), key_type=str)
    if how == "reduce":
        table = grouped.reduce(lambda a, b: a + b, lambda a, b: None if a == b else a - b, name="s")
    else:
        table = grouped.aggregate(
            lambda: 0, lambda _k, v, a: a + v, lambda _k, v, a: None if a == v else a - v, name="s"
        )
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "A", 1, timestamp_ms=10)
        driver.pipe(topic, "A", None, timestamp_ms=15)
        assert driver.store("s") == {}
        driver.pipe(topic, "A", 2, timestamp_ms=5)
        assert records(driver, out) == [("g", 1, 10), ("g", None, 15), ("g", 2, 5)]
        assert driver.timestamped_store("s") == {"g": (2, 5)}
