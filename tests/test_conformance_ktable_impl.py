"""Kafka Streams conformance: a KTable's derived tables and its stream.

Ported from org.apache.kafka.streams.kstream.internals.KTableImplTest (testKTable,
testMaterializedKTable): map_values and filter derive tables without stores; the
filter sends a deletion for a key it rejects unless its source table, named by the
app (Kafka's Materialized.as), sends old values; a table written to a topic and read
back as a table gives the same records.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

INPUT = [("A", "01", 5), ("B", "02", 100), ("C", "03", 0), ("D", "04", 0)]
INPUT += [("A", "05", 10), ("A", "06", 8)]


@pytest.mark.parametrize("name", [None, "fred"], ids=["testKTable", "testMaterializedKTable"])
def test_KTableImplTest(name: str | None) -> None:
    app = sk.App("ktable-impl")
    topic1, topic2, out1, out4 = (
        app.topic(n, key_type=str, value_type=str) for n in ("topic1", "topic2", "out1", "out4")
    )
    out2, out3 = (app.topic(n, key_type=str, value_type=int) for n in ("out2", "out3"))
    table1 = app.ktable(topic1, name=name)
    table1.to_stream().to(out1)
    table2 = table1.map_values(int)
    table2.to_stream().to(out2)
    table2.filter(lambda _k, v: v % 2 == 0).to_stream().to(out3)
    table1.to_stream().to(topic2)
    app.ktable(topic2).to_stream().to(out4)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in INPUT:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert records(driver, out1) == INPUT
        assert records(driver, out2) == [(k, int(v), ts) for k, v, ts in INPUT]
        evens: list[tuple[str, Any, int]] = [
            (k, int(v) if int(v) % 2 == 0 else None, ts) for k, v, ts in INPUT
        ]
        if name is not None:  # old values: no deletion of a key that never passed
            evens = [("B", 2, 100), ("D", 4, 0), ("A", 6, 8)]
        assert records(driver, out3) == evens
        assert records(driver, out4) == INPUT
