"""Kafka Streams conformance: aggregations of a grouped stream.

Ported from org.apache.kafka.streams.kstream.internals.KGroupedStreamImplTest:
results and stored rows carry the larger of the record's and the previous
aggregate's timestamp; a null value is skipped.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, string_init, string_topics, tostring_adder

import streamkit as sk
from streamkit.testing import TopologyTestDriver

W = sk.Windowed
# processData: the same inputs for the non-windowed cases.
DATA = [("1", "A", 5), ("2", "B", 1), ("1", "C", 3), ("1", "D", 10), ("3", "E", 8), ("3", "F", 9)]


def _grouped(name: str) -> tuple[sk.App, sk.Topic, sk.KGroupedStream]:
    app = sk.App(name)
    (topic,) = string_topics(app, "topic")
    return app, topic, app.stream(topic).group_by_key()


def _process_data(driver: TopologyTestDriver, topic: sk.Topic) -> None:
    for key, value, ts in DATA:
        driver.pipe(topic, key, value, timestamp_ms=ts)
    driver.pipe(topic, "3", None, timestamp_ms=9)


@pytest.mark.parametrize("store", ["aggregate", None])
def test_KGroupedStreamImplTest_shouldAggregateAndMaterializeResults(store: str | None) -> None:
    """With store=None, shouldAggregateWithDefaultSerdes: the last result per key."""
    app, topic, grouped = _grouped("kgrouped-aggregate")
    (out,) = string_topics(app, "out")
    grouped.aggregate(string_init, tostring_adder, name=store).to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        _process_data(driver, topic)
        expected = {"1": ("0+A+C+D", 10), "2": ("0+B", 1), "3": ("0+E+F", 9)}
        if store is not None:
            assert driver.store(store) == {k: v for k, (v, _) in expected.items()}
            assert driver.timestamped_store(store) == expected
        last = {key: (value, ts) for key, value, ts in records(driver, out)}
        assert last == expected
    dropped = app.metrics.value(
        "dropped_records", node="KSTREAM-AGGREGATE-0000000001", reason="null value"
    )
    assert dropped == 1


@pytest.mark.parametrize("store", ["aggregate-by-key-windowed", None])
def test_KGroupedStreamImplTest_shouldCountWindowed(store: str | None) -> None:
    """With store=None, shouldCountWindowedWithInternalStoreName. TimeWindows.of(500 ms):
    Kafka's deprecated form, whose grace is 24 h less the size."""
    app, topic, grouped = _grouped("kgrouped-count-windowed")
    out = app.topic("out", key_type=Any, value_type=int)
    windows = sk.TimeWindows.of_size_and_grace(0.5, 86_400 - 0.5)
    grouped.windowed_by(windows).count(name=store, close_idle_after=None).to_stream().to(out)
    inputs = [
        ("1", 0), ("1", 499), ("1", 100), ("2", 0), ("2", 100), ("2", 200), ("3", 1),
        ("1", 500), ("1", 500), ("2", 500), ("2", 500), ("3", 100),
    ]  # fmt: skip
    with TopologyTestDriver(app) as driver:
        for key, ts in inputs:
            driver.pipe(topic, key, "A" if key == "1" else "B", timestamp_ms=ts)
        got = [(W(*key), count, ts) for key, count, ts in records(driver, out)]
    first, second = (0, 500), (500, 1000)
    assert got == [
        (W("1", *first), 1, 0),
        (W("1", *first), 2, 499),
        (W("1", *first), 3, 499),
        (W("2", *first), 1, 0),
        (W("2", *first), 2, 100),
        (W("2", *first), 3, 200),
        (W("3", *first), 1, 1),
        (W("1", *second), 1, 500),
        (W("1", *second), 2, 500),
        (W("2", *second), 1, 500),
        (W("2", *second), 2, 500),
        (W("3", *first), 2, 100),
    ]


@pytest.mark.parametrize("store", ["aggregate-by-key-windowed", None])
def test_KGroupedStreamImplTest_shouldCountSlidingWindows(store: str | None) -> None:
    """With store=None, shouldCountSlidingWindowsWithInternalStoreName. Kafka sorts the
    results by key and window start; each window's updates keep their order."""
    app, topic, grouped = _grouped("kgrouped-count-sliding")
    out = app.topic("out", key_type=Any, value_type=int)
    windows = sk.SlidingWindows.of_time_difference_and_grace(0.5, 2)
    grouped.windowed_by(windows).count(name=store, close_idle_after=None).to_stream().to(out)
    inputs = [
        ("1", 500), ("1", 999), ("1", 600), ("2", 500), ("2", 600), ("2", 700), ("3", 501),
        ("1", 1000), ("1", 1000), ("2", 1000), ("2", 1000), ("3", 600),
    ]  # fmt: skip
    with TopologyTestDriver(app) as driver:
        for key, ts in inputs:
            driver.pipe(topic, key, {"1": "A", "2": "B", "3": "C"}[key], timestamp_ms=ts)
        got = [(W(*key), count, ts) for key, count, ts in records(driver, out)]
    got.sort(key=lambda r: (r[0].key, r[0].start_ms))
    expected = {
        "1": [
            (0, 1, 500), (100, 2, 600), (499, 2, 999), (499, 3, 999), (500, 4, 1000),
            (500, 5, 1000), (501, 1, 999), (501, 2, 999), (501, 3, 1000), (501, 4, 1000),
            (601, 1, 999), (601, 2, 1000), (601, 3, 1000), (1000, 1, 1000), (1000, 2, 1000),
        ],
        "2": [
            (0, 1, 500), (100, 2, 600), (200, 3, 700), (500, 4, 1000), (500, 5, 1000),
            (501, 1, 600), (501, 2, 700), (501, 3, 1000), (501, 4, 1000), (601, 1, 700),
            (601, 2, 1000), (601, 3, 1000), (701, 1, 1000), (701, 2, 1000),
        ],
        "3": [(1, 1, 501), (100, 2, 600), (502, 1, 600)],
    }  # fmt: skip
    assert got == [
        (W(key, start, start + 500), count, ts)
        for key, rows in expected.items()
        for start, count, ts in rows
    ]


SESSION_INPUTS = [("1", 10), ("2", 15), ("1", 30), ("1", 70), ("1", 100), ("1", 90)]


def _last_per_session(driver: TopologyTestDriver, out: sk.Topic) -> dict[Any, tuple[Any, int]]:
    """MockApiProcessor.lastValueAndTimestampPerKey."""
    return {W(*key): (value, ts) for key, value, ts in records(driver, out)}


@pytest.mark.parametrize("how", ["aggregate", "count", "reduce"])
@pytest.mark.parametrize("store", ["session-store", None])
def test_KGroupedStreamImplTest_sessionWindows(how: str, store: str | None) -> None:
    """shouldAggregateSessionWindows, shouldCountSessionWindows, shouldReduceSessionWindows
    and their ...WithInternalStoreName forms: SessionWindows.ofInactivityGapWithNoGrace(30)."""
    app, topic, grouped = _grouped(f"kgrouped-session-{how}")
    out = app.topic("out", key_type=Any, value_type=Any)
    sessions = grouped.windowed_by(sk.SessionWindows.of_inactivity_gap_with_no_grace(0.03))
    if how == "aggregate":
        table = sessions.aggregate(
            lambda: 0, lambda _k, _v, agg: agg + 1, merger=lambda _k, a, b: a + b, name=store
        )
        values = ["1", "2", "1", "1", "1", "1"]
        expected = [(2, 30), (1, 15), (3, 100)]
    elif how == "count":
        table = sessions.count(name=store)
        values = ["1", "2", "1", "1", "1", "1"]
        expected = [(2, 30), (1, 15), (3, 100)]
    else:
        table = sessions.reduce(lambda a, b: f"{a}:{b}", name=store)
        values = ["A", "Z", "B", "A", "B", "C"]
        expected = [("A:B", 30), ("Z", 15), ("A:B:C", 100)]
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for (key, ts), value in zip(SESSION_INPUTS, values, strict=True):
            driver.pipe(topic, key, value, timestamp_ms=ts)
        last = _last_per_session(driver, out)
    assert last[W("1", 10, 30)] == expected[0]
    assert last[W("2", 15, 15)] == expected[1]
    assert last[W("1", 70, 100)] == expected[2]


def test_KGroupedStreamImplTest_shouldCountAndMaterializeResults() -> None:
    app, topic, grouped = _grouped("kgrouped-count")
    grouped.count(name="count")
    with TopologyTestDriver(app) as driver:
        _process_data(driver, topic)
        assert driver.store("count") == {"1": 3, "2": 1, "3": 2}
        assert driver.timestamped_store("count") == {"1": (3, 10), "2": (1, 1), "3": (2, 9)}


def test_KGroupedStreamImplTest_shouldReduceAndMaterializeResults() -> None:
    app, topic, grouped = _grouped("kgrouped-reduce")
    grouped.reduce(lambda a, b: f"{a}+{b}", name="reduce")  # MockReducer.STRING_ADDER
    with TopologyTestDriver(app) as driver:
        _process_data(driver, topic)
        assert driver.timestamped_store("reduce") == {
            "1": ("A+C+D", 10),
            "2": ("B", 1),
            "3": ("E+F", 9),
        }
    node = "KSTREAM-REDUCE-0000000001"
    assert app.metrics.value("dropped_records", node=node, reason="null value") == 1


@pytest.mark.parametrize("how", ["reduce", "aggregate"])
def test_grouped_stream_aggregate_of_none_is_deleted(how: str) -> None:
    """Kafka's KStreamAggregate / KStreamReduce processors: an aggregator that gives null
    deletes the row (forwarded as a deletion); the key's next record starts afresh
    from the initializer (reduce: the record's own value), with its own timestamp."""
    app, topic, grouped = _grouped(f"kgrouped-{how}-none")
    (out,) = string_topics(app, "out")
    if how == "reduce":
        table = grouped.reduce(lambda a, b: None if b == "x" else a + b, name="s")
    else:
        table = grouped.aggregate(
            string_init, lambda _k, v, a: None if v == "x" else f"{a}+{v}", name="s"
        )
    table.to_stream().to(out)
    first = "A" if how == "reduce" else "0+A"
    with TopologyTestDriver(app) as driver:
        for value, ts in [("A", 10), ("x", 20), ("B", 5)]:
            driver.pipe(topic, "1", value, timestamp_ms=ts)
        again = "B" if how == "reduce" else "0+B"
        assert records(driver, out) == [("1", first, 10), ("1", None, 20), ("1", again, 5)]
        assert driver.timestamped_store("s") == {"1": (again, 5)}
