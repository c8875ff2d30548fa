"""Kafka Streams conformance: KTable group_by aggregations.

Ported from org.apache.kafka.streams.kstream.internals.KTableAggregateTest (Kafka
3.5+, KIP-904: a row that stays in its group is one update). Results carry the
larger of the update's and the previous aggregate's timestamp.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import (
    COLOUR_COUNTS,
    COLOURS,
    records,
    string_init,
    string_topics,
    tostring_adder,
    tostring_remover,
)

import streamkit as sk
from streamkit.testing import TopologyTestDriver


def _aggregating(
    selector: Any, history_retention: float | None = None
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("ktable-aggregate")
    topic1, out = string_topics(app, "topic1", "out")
    (
        app.ktable(topic1, history_retention=history_retention)
        .group_by(selector, key_type=str)
        .aggregate(string_init, tostring_adder, tostring_remover, name="topic1-Canonized")
        .to_stream()
        .to(out)
    )
    return app, topic1, out


def test_KTableAggregateTest_testAggBasic() -> None:
    app, topic1, out = _aggregating(lambda k, v: (k, v))
    with TopologyTestDriver(app) as driver:
        for key, value, ts in [
            ("A", "1", 10),
            ("B", "2", 15),
            ("A", "3", 20),
            ("B", "4", 18),
            ("C", "5", 5),
            ("D", "6", 25),
            ("B", "7", 15),
            ("C", "8", 10),
        ]:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out) == [
            ("A", "0+1", 10),
            ("B", "0+2", 15),
            ("A", "0+1-1+3", 20),
            ("B", "0+2-2+4", 18),
            ("C", "0+5", 5),
            ("D", "0+6", 25),
            ("B", "0+2-2+4-4+7", 18),
            ("C", "0+5-5+8", 10),
        ]


def _repartition_selector(key: str, value: str) -> tuple[Any, Any] | None:
    if key == "null":
        return None, value
    if key == "NULL":
        return None
    return value, value


REPARTITION_INPUT = [
    ("A", "1", 10),
    ("A", None, 15),
    ("A", "1", 12),
    ("B", "2", 20),
    ("null", "3", 25),
    ("B", "4", 23),
    ("NULL", "5", 24),
    ("B", "7", 22),
]


@pytest.mark.parametrize("versioned", [False, True], ids=["testAggRepartition", "versioned"])
def test_KTableAggregateTest_testAggRepartition(versioned: bool) -> None:
    """With a versioned source table: testAggOfVersionedStore, where the out-of-order
    updates (A at 12, B at 22) are ignored."""
    app, topic1, out = _aggregating(_repartition_selector, 300 if versioned else None)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in REPARTITION_INPUT:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        if versioned:
            assert records(driver, out) == [
                ("1", "0+1", 10),
                ("1", "0+1-1", 15),
                ("2", "0+2", 20),
                ("2", "0+2-2", 23),
                ("4", "0+4", 23),
            ]
        else:
            assert records(driver, out) == [
                ("1", "0+1", 10),
                ("1", "0+1-1", 15),
                ("1", "0+1-1+1", 15),
                ("2", "0+2", 20),
                ("2", "0+2-2", 23),
                ("4", "0+4", 23),
                ("4", "0+4-4", 23),
                ("7", "0+7", 22),
            ]


def _count_helper(name: str | None, versioned: bool = False) -> None:
    """KTableAggregateTest.testCountHelper, shared by testCount and
    testCountWithInternalStore; versioned: testCountOfVersionedStore, whose extra
    out-of-order update (A blue at 11) is ignored."""
    app = sk.App("ktable-count")
    (source,) = string_topics(app, "count-test-input")
    counts = app.topic("counts", key_type=str, value_type=int)
    table = app.ktable(source, history_retention=300 if versioned else None)
    table.group_by(lambda k, v: (v, v), key_type=str).count(name=name).to_stream().to(counts)
    inputs = list(COLOURS)
    if versioned:
        inputs.insert(3, ("A", "blue", 11))
    with TopologyTestDriver(app) as driver:
        for key, value, ts in inputs:
            driver.pipe(source, key, value, timestamp_ms=ts)
        assert records(driver, counts) == COLOUR_COUNTS


def test_KTableAggregateTest_testCount() -> None:
    _count_helper("count")


def test_KTableAggregateTest_testCountWithInternalStore() -> None:
    _count_helper(None)


def test_KTableAggregateTest_testCountOfVersionedStore() -> None:
    _count_helper(None, versioned=True)


def test_KTableAggregateTest_testRemoveOldBeforeAddNew() -> None:
    app = sk.App("remove-old-before-add-new")
    source, out = string_topics(app, "count-test-input", "out")
    (
        app.ktable(source)
        .group_by(lambda k, v: (k[0], k[1]), key_type=str)
        .aggregate(
            lambda: "",
            lambda _k, value, agg: agg + value,
            lambda _k, value, agg: agg.replace(value, ""),
            name="someStore",
        )
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "11", "A", timestamp_ms=10)
        driver.pipe(source, "12", "B", timestamp_ms=8)
        driver.pipe(source, "11", None, timestamp_ms=12)
        driver.pipe(source, "12", "C", timestamp_ms=6)
        assert records(driver, out) == [
            ("1", "1", 10),
            ("1", "12", 10),
            ("1", "2", 12),
            ("1", "2", 12),
        ]
        assert driver.timestamped_store("someStore") == {"1": ("2", 12)}


def test_KTableAggregateTest_testShouldNotSendTransientStateIfNotUpgrading() -> None:
    """Also testNoEqualsAndSameObject: a row that keeps its group (here its own key) is
    one update of the count, never a transient 0 between the removal and the add."""
    app = sk.App("ktable-count-no-transient")
    (source,) = string_topics(app, "input-topic")
    out = app.topic("output-topic", key_type=str, value_type=int)
    app.ktable(source).group_by(lambda k, v: (k, v), key_type=str).count().to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "1", "", timestamp_ms=8)
        driver.pipe(source, "1", "", timestamp_ms=9)
        assert records(driver, out) == [("1", 1, 8), ("1", 1, 9)]
