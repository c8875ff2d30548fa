"""Kafka Streams conformance: a foreign-key join's result joined again.

Ported from org.apache.kafka.streams.kstream.internals.KTableKTableForeignKeyJoinScenarioTest
(shouldWorkWithDefaultSerdes and its variants, which differ only in serdes): the
table a foreign-key join gives is a table like any other, here the right side of a
key join with its own left table.
"""

from __future__ import annotations

import streamkit as sk
from streamkit.testing import TopologyTestDriver


def test_KTableKTableForeignKeyJoinScenarioTest_shouldWorkWithDefaultSerdes() -> None:
    app = sk.App("fk-join-scenario")
    a, b = (app.topic(n, key_type=int, value_type=str) for n in ("A", "B"))
    output = app.topic("output", key_type=int, value_type=str)
    a_table, b_table = app.ktable(a), app.ktable(b)
    fk_join_result = a_table.join(
        b_table,
        lambda a_val, b_val: f"({a_val},{b_val})",
        foreign_key=lambda value: int(value.split("-")[0]),
    )
    final = a_table.join(fk_join_result, lambda a_val, fk_val: f"({a_val},{fk_val})")
    final.to_stream().to(output)
    with TopologyTestDriver(app) as driver:
        driver.pipe(a, 1, "999-alpha")
        driver.pipe(b, 999, "beta")
        assert dict(driver.read_output(output)) == {1: "(999-alpha,(999-alpha,beta))"}
