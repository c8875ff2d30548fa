"""Kafka Streams conformance: a KTable's source, filter and map_values, and what
passes downstream.

Ported from org.apache.kafka.streams.kstream.internals.KTableSourceTest,
KTableFilterTest, KTableMapValuesTest and KTableKTableOuterJoinTest. Kafka's mock
processor on a table node sees what that table's `toStream()` would: each is
read here from a `to_stream().to(topic)`. Kafka's `builder.table(topic)` is
`app.ktable(topic)`; `Materialized.as(name)` on it is `name=`.
"""

from __future__ import annotations

from typing import Any

from conformance import records, string_topics, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

Triple = tuple[Any, Any, int]


def test_KTableSourceTest_testKTable() -> None:
    app = sk.App("ktable-source")
    topic1 = app.topic("topic1", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    app.ktable(topic1).to_stream().to(out)
    inputs: list[Triple] = [
        ("A", 1, 10),
        ("B", 2, 11),
        ("C", 3, 12),
        ("D", 4, 13),
        ("A", None, 14),
        ("B", None, 15),
    ]
    with TopologyTestDriver(app) as driver:
        for key, value, ts in inputs:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out) == inputs


def test_a_source_table_passes_on_an_update_that_repeats_the_row_and_a_tombstone_of_no_row() -> (
    None
):
    """Kafka's KTableSource forwards every record: KIP-557's drop of idempotent
    updates is disabled (KTableSourceTest.testKTableSourceEmitOnChange is @Disabled,
    KAFKA-12508), and a tombstone goes on whether or not the key had a row."""
    app = sk.App("ktable-source-all")
    topic1 = app.topic("topic1", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    app.ktable(topic1, name="store").to_stream().to(out)
    inputs: list[Triple] = [("A", 1, 10), ("A", 1, 12), ("Z", None, 13), ("A", 1, 9)]
    with TopologyTestDriver(app) as driver:
        for key, value, ts in inputs:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out) == inputs
        # The out-of-order update is the row now, with its own timestamp (Kafka logs it).
        assert driver.timestamped_store("store") == {"A": (1, 9)}


def _filter_app(materialized: str | None) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("ktable-filter")
    topic1 = app.topic("topic1", key_type=str, value_type=int)
    out2, out3 = (app.topic(n, key_type=str, value_type=int) for n in ("out2", "out3"))
    table1 = app.ktable(topic1, name=materialized)
    table1.filter(lambda _k, v: v % 2 == 0).to_stream().to(out2)
    table1.filter_not(lambda _k, v: v % 2 == 0).to_stream().to(out3)
    return app, topic1, out2, out3


_FILTER_INPUTS: list[Triple] = [
    ("A", 1, 10),
    ("B", 2, 5),
    ("C", 3, 8),
    ("D", 4, 14),
    ("A", None, 18),
    ("B", None, 15),
]


def test_KTableFilterTest_shouldPassThroughWithoutMaterialization() -> None:
    """doTestKTable: a table without a store of its own sends no old values, so
    its filters pass a deletion on for every record they reject."""
    app, topic1, out2, out3 = _filter_app(None)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in _FILTER_INPUTS:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out2) == [
            ("A", None, 10),
            ("B", 2, 5),
            ("C", None, 8),
            ("D", 4, 14),
            ("A", None, 18),
            ("B", None, 15),
        ]
        assert records(driver, out3) == [
            ("A", 1, 10),
            ("B", None, 5),
            ("C", 3, 8),
            ("D", None, 14),
            ("A", None, 18),
            ("B", None, 15),
        ]


def test_KTableFilterTest_a_materialized_table_s_filter_passes_on_only_changes() -> None:
    """KTableFilter's constructor: "If upstream is already materialized, enable
    sending old values to avoid sending unnecessary tombstones"
    (shouldSendOldValuesWhenEnabledOnUpStreamMaterialization's setup): a rejected
    key that never passed sends nothing; a deletion of one that did still goes on."""
    app, topic1, out2, out3 = _filter_app("store2")
    with TopologyTestDriver(app) as driver:
        for key, value, ts in _FILTER_INPUTS:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out2) == [("B", 2, 5), ("D", 4, 14), ("B", None, 15)]
        assert records(driver, out3) == [("A", 1, 10), ("C", 3, 8), ("A", None, 18)]


def _skip_null_app(versioned: bool) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("ktable-filter-skip")
    topic1 = app.topic("topic1", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=str)
    table1 = app.ktable(topic1, history_retention=300.0 if versioned else None)
    table2 = table1.filter(lambda _k, v: v.lower() == "accept")
    table2.to_stream().to(out)
    # The regrouping asks table2 for old values, with force (Kafka's KTableImpl.groupBy).
    table2.group_by(lambda k, v: (k, v), key_type=str).reduce(
        lambda agg, v: agg + v, lambda agg, v: agg.replace(v, "", 1), name="mock-result"
    )
    return app, topic1, out


def test_KTableFilterTest_shouldSkipNullToRepartitionWithoutMaterialization() -> None:
    app, topic1, out = _skip_null_app(versioned=False)
    with TopologyTestDriver(app) as driver:
        for key, ts in (("A", 5), ("B", 10), ("C", 20)):
            driver.pipe(topic1, key, "reject", timestamp_ms=ts)
        assert records(driver, out) == []
        assert driver.store("mock-result") == {}


def test_KTableFilterTest_shouldNotSkipNullIfVersionedUpstream() -> None:
    app, topic1, out = _skip_null_app(versioned=True)
    with TopologyTestDriver(app) as driver:
        for key, ts in (("A", 5), ("B", 10), ("C", 20)):
            driver.pipe(topic1, key, "reject", timestamp_ms=ts)
        assert records(driver, out) == [("A", None, 5), ("B", None, 10), ("C", None, 20)]
        assert driver.store("mock-result") == {}


def test_KTableMapValuesTest_testKTable() -> None:
    app = sk.App("ktable-mapvalues")
    topic1 = app.topic("topic1", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=int)
    app.ktable(topic1).map_values(lambda v: ord(v[0]) - 48).to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in (("A", "1", 5), ("B", "2", 25), ("C", "3", 20), ("D", "4", 10)):
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out) == [("A", 1, 5), ("B", 2, 25), ("C", 3, 20), ("D", 4, 10)]


def test_KTableKTableOuterJoinTest_testJoin() -> None:
    app = sk.App("ktable-outer-join")
    topic1, topic2, output = (
        app.topic(name, key_type=int, value_type=str) for name in ("topic1", "topic2", "output")
    )
    app.ktable(topic1).outer_join(app.ktable(topic2), tostring_joiner).to_stream().to(output)
    keys = (0, 1, 2, 3)
    steps: list[tuple[sk.Topic, list[tuple[Any, Any, int]], list[Triple]]] = [
        (
            topic1,
            [(0, "X0", 5), (1, "X1", 6), (None, "SomeVal", 42)],
            [(0, "X0+null", 5), (1, "X1+null", 6)],
        ),
        (
            topic2,
            [(0, "Y0", 0), (1, "Y1", 10), (None, "AnotherVal", 73)],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
        ),
        (
            topic1,
            [(k, f"XX{k}", 7) for k in keys],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10), (2, "XX2+null", 7), (3, "XX3+null", 7)],
        ),
        (
            topic2,
            [(k, f"YY{k}", k * 5) for k in keys],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
        ),
        (
            topic1,
            [(k, f"XXX{k}", 6) for k in keys],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
        ),
        (topic2, [(0, None, 5), (1, None, 7)], [(0, "XXX0+null", 6), (1, "XXX1+null", 7)]),
        (
            topic1,
            [(k, f"XXXX{k}", 13) for k in keys],
            [
                (0, "XXXX0+null", 13),
                (1, "XXXX1+null", 13),
                (2, "XXXX2+YY2", 13),
                (3, "XXXX3+YY3", 15),
            ],
        ),
        (
            topic1,
            [(0, None, 0), (1, None, 42), (2, None, 5), (3, None, 20)],
            [(0, None, 0), (1, None, 42), (2, "null+YY2", 10), (3, "null+YY3", 20)],
        ),
    ]
    with TopologyTestDriver(app) as driver:
        for number, (topic, inputs, expected) in enumerate(steps):
            for key, value, ts in inputs:
                driver.pipe(topic, key, value, timestamp_ms=ts)
            assert records(driver, output) == expected, f"step {number}"


def test_KTableSourceTest_testValueGetter() -> None:
    """The table's rows as a value getter reads them: the latest value with its own
    record's timestamp (an out-of-order update included); a tombstone removes the row."""
    app = sk.App("ktable-value-getter")
    topic1 = app.topic("topic1", key_type=str, value_type=str)
    app.ktable(topic1, name="store")
    with TopologyTestDriver(app) as driver:
        for key, ts in (("A", 10), ("B", 20), ("C", 15)):
            driver.pipe(topic1, key, "01", timestamp_ms=ts)
        assert driver.timestamped_store("store") == {
            "A": ("01", 10),
            "B": ("01", 20),
            "C": ("01", 15),
        }
        driver.pipe(topic1, "A", "02", timestamp_ms=30)
        driver.pipe(topic1, "B", "02", timestamp_ms=5)
        assert driver.timestamped_store("store") == {
            "A": ("02", 30),
            "B": ("02", 5),
            "C": ("01", 15),
        }
        driver.pipe(topic1, "A", "03", timestamp_ms=29)
        assert driver.timestamped_store("store")["A"] == ("03", 29)
        driver.pipe(topic1, "A", None, timestamp_ms=50)
        driver.pipe(topic1, "B", None, timestamp_ms=3)
        assert driver.timestamped_store("store") == {"C": ("01", 15)}


def test_KTableMapValuesTest_testQueryableValueGetter() -> None:
    """Kafka reads two mapValues tables (value * 1, value * -1) through their value
    getters after each step; here a probe table left-joined with each looks them up:
    a result carries the larger timestamp, so a probe at 0 shows the row's."""
    app = sk.App("ktable-mapvalues-getter")
    topic1, probe_topic = string_topics(app, "topic1", "probe")
    out2, out3 = (app.topic(n, key_type=str, value_type=int) for n in ("out2", "out3"))
    table1 = app.ktable(topic1)
    table2 = table1.map_values(int)
    table3 = table1.map_values(lambda v: -int(v))
    probe = app.ktable(probe_topic)
    probe.left_join(table2, lambda _p, v: v).to_stream().to(out2)
    probe.left_join(table3, lambda _p, v: v).to_stream().to(out3)
    steps = [
        (
            [("A", "01", 50), ("B", "01", 10), ("C", "01", 30)],
            {"A": (1, 50), "B": (1, 10), "C": (1, 30)},
        ),
        ([("A", "02", 25), ("B", "02", 20)], {"A": (2, 25), "B": (2, 20), "C": (1, 30)}),
        ([("A", "03", 35)], {"A": (3, 35), "B": (2, 20), "C": (1, 30)}),
        ([("A", None, 1)], {"A": (None, 0), "B": (2, 20), "C": (1, 30)}),
    ]
    with TopologyTestDriver(app) as driver:
        for number, (inputs, getter) in enumerate(steps):
            for key, value, ts in inputs:
                driver.pipe(topic1, key, value, timestamp_ms=ts)
            records(driver, out2), records(driver, out3)  # the joins' own updates
            for key in getter:
                driver.pipe(probe_topic, key, "probe", timestamp_ms=0)
            negated = {k: (None if v is None else -v, ts) for k, (v, ts) in getter.items()}
            assert records(driver, out2) == [(k, *row) for k, row in getter.items()], number
            assert records(driver, out3) == [(k, *row) for k, row in negated.items()], number
