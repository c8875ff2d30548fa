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
