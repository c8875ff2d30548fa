"""Kafka Streams conformance: `KStream.to_table()` (Kafka's KStream#toTable, KIP-523).

Ported from org.apache.kafka.streams.kstream.internals.KStreamImplTest (the
toTable cases), RelaxedNullKeyRequirementJoinTest.testRelaxedLeftStreamTableJoin and
StreamsBuilderTest.shouldNotReuseRepartitionTopicAsChangelogs. Kafka's
`toTable(Materialized.as(name))` is `to_table(name=...)`;
`Materialized.with(keySerde, ...)` is `key_type=`.
"""

from __future__ import annotations

from typing import Any

from conformance import COLOUR_COUNTS, COLOURS, records, string_topics, text, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

Triple = tuple[Any, Any, int]
INPUTS: list[Triple] = [
    ("A", "01", 5),
    ("B", "02", 100),
    ("C", "03", 0),
    ("D", "04", 0),
    ("A", "05", 10),
    ("A", "06", 8),
]


def test_KStreamImplTest_shouldNotMaterializedKTableFromKStream() -> None:
    app = sk.App("to-table")
    source, out = string_topics(app, "input", "output")
    app.stream(source).to_table().to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, INPUTS)
        # Every update goes on with its own timestamp, an out-of-order one too.
        assert records(driver, out) == INPUTS


def test_KStreamImplTest_shouldMaterializeKTableFromKStream() -> None:
    app = sk.App("to-table-store")
    (source,) = string_topics(app, "input")
    app.stream(source).to_table(name="store")
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, [("A", "01"), ("B", "02"), ("A", "03")])
        assert driver.store("store") == {"A": "03", "B": "02"}


def test_KStreamImplTest_shouldSupportKeyChangeKTableFromKStream() -> None:
    app = sk.App("to-table-rekey")
    source = app.topic("input", key_type=str, value_type=str, partitions=2)
    out = app.topic("output", key_type=int, value_type=str, partitions=2)
    (
        app.stream(source)
        .map(lambda k, v: (ord(k[0]) - ord("A"), v))
        .to_table(key_type=int)
        .to_stream()
        .to(out)
    )
    # Kafka repartitions a key-changed stream before its table: so does streamkit.
    assert [t.name for t in app.topology().repartition_topics] == [
        "to-table-rekey-KSTREAM-TOTABLE-0000000002-repartition"
    ]
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, INPUTS)
        assert sorted(records(driver, out), key=lambda r: (r[0], r[1])) == [
            (0, "01", 5),
            (0, "05", 10),
            (0, "06", 8),
            (1, "02", 100),
            (2, "03", 0),
            (3, "04", 0),
        ]


def test_KStreamImplTest_shouldSupportForeignKeyTableTableJoinWithKTableFromKStream() -> None:
    app = sk.App("to-table-fk")
    input1, input2, output = string_topics(app, "input1", "input2", "output")
    left = app.stream(input1).to_table()
    right = app.stream(input2).to_table()
    left.join(
        right, lambda v1, v2: f"({v1},{v2})", foreign_key=lambda v: v.split("|")[1]
    ).to_stream().to(output)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(input2, [("rhs1", "rhsValue1"), ("rhs2", "rhsValue2"), ("rhs3", "v3")])
        assert driver.read_output(output) == []
        driver.pipe_many(input1, [("lhs1", "lhsValue1|rhs1"), ("lhs2", "lhsValue2|rhs2")])
        assert dict(driver.read_output(output)) == {
            "lhs1": "(lhsValue1|rhs1,rhsValue1)",
            "lhs2": "(lhsValue2|rhs2,rhsValue2)",
        }
        driver.pipe(input1, "lhs3", "lhsValue3|rhs1")
        assert dict(driver.read_output(output)) == {"lhs3": "(lhsValue3|rhs1,rhsValue1)"}
        driver.pipe(input1, "lhs1", None)
        assert dict(driver.read_output(output)) == {"lhs1": None}


def _join_steps(driver: TopologyTestDriver, left: sk.Topic, right: sk.Topic, out: sk.Topic) -> None:
    """The steps shared by the table-table and stream-table join cases of KStreamImplTest."""
    driver.pipe_many(right, [("lhs1", "rhsValue1"), ("rhs2", "rhsValue2"), ("lhs3", "rhsValue3")])
    assert dict(driver.read_output(out)) == {}
    driver.pipe_many(left, [("lhs1", "lhsValue1"), ("lhs2", "lhsValue2")])
    assert dict(driver.read_output(out)) == {"lhs1": "lhsValue1+rhsValue1"}
    driver.pipe(left, "lhs3", "lhsValue3")
    assert dict(driver.read_output(out)) == {"lhs3": "lhsValue3+rhsValue3"}
    driver.pipe(left, "lhs1", "lhsValue4")
    assert dict(driver.read_output(out)) == {"lhs1": "lhsValue4+rhsValue1"}


def test_KStreamImplTest_shouldSupportTableTableJoinWithKStreamToKTable() -> None:
    app = sk.App("to-table-join")
    left, right, out = string_topics(app, "left", "right", "output")
    table1 = app.stream(left).to_table()
    table2 = app.stream(right).to_table()
    table1.join(table2, tostring_joiner).to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        _join_steps(driver, left, right, out)


def test_KStreamImplTest_shouldSupportStreamTableJoinWithKStreamToKTable() -> None:
    app = sk.App("to-table-stream-join")
    stream_topic, table_topic, out = string_topics(app, "streamTopic", "tableTopic", "output")
    table = app.stream(table_topic).to_table()
    app.stream(stream_topic).join(table, tostring_joiner).to(out)
    with TopologyTestDriver(app) as driver:
        _join_steps(driver, stream_topic, table_topic, out)


def test_KStreamImplTest_shouldSupportGroupByCountWithKStreamToKTable() -> None:
    app = sk.App("to-table-count")
    source = app.topic("input", key_type=str, value_type=str)
    out = app.topic("output", key_type=str, value_type=int)
    (
        app.stream(source)
        .to_table()
        .group_by(lambda k, v: (v, v), key_type=str)
        .count()
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, COLOURS)
        assert records(driver, out) == COLOUR_COUNTS


def test_KStreamImplTest_shouldSupportTriggerMaterializedWithKTableFromKStream() -> None:
    app = sk.App("to-table-map-values")
    source = app.topic("input", key_type=str, value_type=str)
    out = app.topic("output", key_type=str, value_type=int)
    app.stream(source).to_table().map_values(lambda v: ord(v[0]) - ord("a")).to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, COLOURS)
        assert records(driver, out) == [
            ("A", 6, 10),
            ("B", 6, 9),
            ("A", 1, 12),
            ("C", 24, 15),
            ("D", 6, 11),
        ]


def test_RelaxedNullKeyRequirementJoinTest_testRelaxedLeftStreamTableJoin() -> None:
    app = sk.App("to-table-null-key")
    left, right, out = string_topics(app, "left", "right", "out")

    def joiner(value: str, other: str | None) -> str:  # the test's JOINER
        return f"{value}|{text(other)}"

    app.stream(left).left_join(app.stream(right).to_table(), joiner).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, None, "leftValue", timestamp_ms=1)
        assert driver.read_output(out) == [(None, "leftValue|null")]


def test_StreamsBuilderTest_shouldNotReuseRepartitionTopicAsChangelogs() -> None:
    app = sk.App("appId")
    (topic,) = string_topics(app, "topic")
    app.stream(topic).repartition().to_table(name="store")
    assert [t.name for t in app.topology().changelog_topics()] == ["appId-store-changelog"]
