"""Kafka Streams conformance: foreign-key KTable-KTable joins (KIP-213).

Ported from org.apache.kafka.streams.integration.KTableKTableForeignKeyJoinIntegrationTest,
run for the inner and the left join as Kafka's parameters do. The output is read as
Kafka's `readKeyValuesToMap` reads it (the last value per key); "store" is the join
result's store. An inner join emits a tombstone for a left row that existed before
and now joins nothing, as it cannot know whether a result went out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import streamkit as sk
from streamkit.testing import TopologyTestDriver

JoinTest = Callable[["_Join"], None]


class _Join:
    """getTopology: left and right tables, the `value.split("|")[1]` extractor."""

    def __init__(self, driver: TopologyTestDriver, topics: dict[str, sk.Topic]) -> None:
        self.driver = driver
        self.topics = topics

    def left(self, key: str, value: str | None) -> None:
        self.driver.pipe(self.topics["left_table"], key, value)

    def right(self, key: str, value: str | None) -> None:
        self.driver.pipe(self.topics["right_table"], key, value)

    def output(self) -> dict[str, Any]:
        return dict(self.driver.read_output(self.topics["output-topic"]))

    def store(self) -> dict[str, Any]:
        return self.driver.store("store-output-store")


def _run(left_join: bool, test: JoinTest) -> None:
    app = sk.App("ktable-ktable-joinOnForeignKey")
    topics = {
        name: app.topic(name, key_type=str, value_type=str)
        for name in ("left_table", "right_table", "output-topic")
    }
    left, right = app.ktable(topics["left_table"]), app.ktable(topics["right_table"])
    join = left.left_join if left_join else left.join
    join(
        right,
        lambda v1, v2: f"({v1},{'null' if v2 is None else v2})",
        foreign_key=lambda value: value.split("|")[1],
        name="store",
    ).to_stream().to(topics["output-topic"])
    with TopologyTestDriver(app) as driver:
        test(_Join(driver, topics))


JOINS = pytest.mark.parametrize("left_join", [False, True], ids=["inner", "left"])


@JOINS
def test_KTableKTableForeignKeyJoinIntegrationTest_doJoinFromLeftThenDeleteLeftEntity(
    left_join: bool,
) -> None:
    def run(j: _Join) -> None:
        j.right("rhs1", "rhsValue1")
        j.right("rhs2", "rhsValue2")
        j.right("rhs3", "rhsValue3")
        assert j.output() == {} and j.store() == {}
        j.left("lhs1", "lhsValue1|rhs1")
        j.left("lhs2", "lhsValue2|rhs2")
        expected = {"lhs1": "(lhsValue1|rhs1,rhsValue1)", "lhs2": "(lhsValue2|rhs2,rhsValue2)"}
        assert j.output() == expected and j.store() == expected
        j.left("lhs3", "lhsValue3|rhs1")
        assert j.output() == {"lhs3": "(lhsValue3|rhs1,rhsValue1)"}
        assert j.store() == {**expected, "lhs3": "(lhsValue3|rhs1,rhsValue1)"}
        j.left("lhs1", None)
        assert j.output() == {"lhs1": None}
        assert j.store() == {
            "lhs2": "(lhsValue2|rhs2,rhsValue2)",
            "lhs3": "(lhsValue3|rhs1,rhsValue1)",
        }

    _run(left_join, run)


@JOINS
def test_KTableKTableForeignKeyJoinIntegrationTest_doJoinFromRightThenDeleteRightEntity(
    left_join: bool,
) -> None:
    def run(j: _Join) -> None:
        j.left("lhs1", "lhsValue1|rhs1")
        j.left("lhs2", "lhsValue2|rhs2")
        j.left("lhs3", "lhsValue3|rhs1")
        half = {
            "lhs1": "(lhsValue1|rhs1,null)",
            "lhs2": "(lhsValue2|rhs2,null)",
            "lhs3": "(lhsValue3|rhs1,null)",
        }
        assert j.output() == (half if left_join else {})
        assert j.store() == (half if left_join else {})
        j.right("rhs1", "rhsValue1")
        one = {"lhs1": "(lhsValue1|rhs1,rhsValue1)", "lhs3": "(lhsValue3|rhs1,rhsValue1)"}
        assert j.output() == one
        assert j.store() == ({**one, "lhs2": "(lhsValue2|rhs2,null)"} if left_join else one)
        j.right("rhs2", "rhsValue2")
        assert j.output() == {"lhs2": "(lhsValue2|rhs2,rhsValue2)"}
        full = {**one, "lhs2": "(lhsValue2|rhs2,rhsValue2)"}
        assert j.store() == full
        j.right("rhs3", "rhsValue3")
        assert j.output() == {} and j.store() == full
        j.right("rhs1", None)
        if left_join:
            assert j.output() == {"lhs1": half["lhs1"], "lhs3": half["lhs3"]}
            assert j.store() == {**half, "lhs2": "(lhsValue2|rhs2,rhsValue2)"}
        else:
            assert j.output() == {"lhs1": None, "lhs3": None}
            assert j.store() == {"lhs2": "(lhsValue2|rhs2,rhsValue2)"}

    _run(left_join, run)


@JOINS
def test_KTableKTableForeignKeyJoinIntegrationTest_shouldEmitTombstoneWhenDeletingNonJoiningRecords(
    left_join: bool,
) -> None:
    def run(j: _Join) -> None:
        j.left("lhs1", "lhsValue1|rhs1")
        expected = {"lhs1": "(lhsValue1|rhs1,null)"} if left_join else {}
        assert j.output() == expected and j.store() == expected
        j.left("lhs1", None)
        assert j.output() == {"lhs1": None} and j.store() == {}
        j.left("lhs1", None)
        assert j.output() == {} and j.store() == {}

    _run(left_join, run)


@JOINS
def test_KTableKTableForeignKeyJoinIntegrationTest_shouldNotEmitTombstonesWhenDeletingNonExistingRecords(  # noqa: E501
    left_join: bool,
) -> None:
    def run(j: _Join) -> None:
        j.left("lhs1", None)
        assert j.output() == {} and j.store() == {}

    _run(left_join, run)


@JOINS
def test_KTableKTableForeignKeyJoinIntegrationTest_joinShouldProduceNullsWhenValueHasNonMatchingForeignKey(  # noqa: E501
    left_join: bool,
) -> None:
    def half(fk: str) -> dict[str, str]:
        return {"lhs1": f"(lhsValue1|{fk},null)"} if left_join else {}

    def run(j: _Join) -> None:
        j.left("lhs1", "lhsValue1|rhs1")
        assert j.output() == half("rhs1") and j.store() == half("rhs1")
        for fk in ("rhs2", "rhs3"):
            j.left("lhs1", f"lhsValue1|{fk}")
            assert j.output() == {"lhs1": f"(lhsValue1|{fk},null)" if left_join else None}
            assert j.store() == half(fk)
        j.right("rhs1", "rhsValue1")
        assert j.output() == {} and j.store() == half("rhs3")
        j.left("lhs1", "lhsValue1|rhs1")
        joined = {"lhs1": "(lhsValue1|rhs1,rhsValue1)"}
        assert j.output() == joined and j.store() == joined
        j.left("lhs1", "lhsValue1|rhs2")
        assert j.output() == {"lhs1": "(lhsValue1|rhs2,null)" if left_join else None}
        assert j.store() == half("rhs2")

    _run(left_join, run)
