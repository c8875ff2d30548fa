"""Kafka Streams conformance: KTable-KTable joins on the key.

Ported from org.apache.kafka.streams.kstream.internals.KTableKTableInnerJoinTest,
KTableKTableLeftJoinTest and KTableKTableOuterJoinTest (testJoin). Kafka's tests run
one script of inputs; a result carries the larger of the two rows' timestamps, and a deletion that
removes a result is a tombstone stamped the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from conformance import records, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

KEYS = (0, 1, 2, 3)
Step = tuple[str, list[tuple[int | None, str | None, int]]]

# The inputs of Kafka's doTestJoin / testJoin, step by step (topic, records).
SCRIPT: list[Step] = [
    ("topic1", [(0, "X0", 5), (1, "X1", 6), (None, "SomeVal", 42)]),
    ("topic2", [(0, "Y0", 0), (1, "Y1", 10), (None, "AnotherVal", 73)]),
    ("topic1", [(k, f"XX{k}", 7) for k in KEYS]),
    ("topic2", [(k, f"YY{k}", k * 5) for k in KEYS]),
    ("topic1", [(k, f"XXX{k}", 6) for k in KEYS]),
    ("topic2", [(0, None, 5), (1, None, 7)]),
    ("topic1", [(k, f"XXXX{k}", 13) for k in KEYS]),
    ("topic1", [(0, None, 0), (1, None, 42), (2, None, 5), (3, None, 20)]),
]


def _run(how: str, expected: list[list[tuple[int, str | None, int]]]) -> None:
    app = sk.App(f"ktable-{how}-join")
    topic1, topic2, output = (
        app.topic(name, key_type=int, value_type=str) for name in ("topic1", "topic2", "output")
    )
    table1, table2 = app.ktable(topic1), app.ktable(topic2)
    method = {"inner": "join", "left": "left_join", "outer": "outer_join"}[how]
    join: Callable[..., sk.KTable] = getattr(table1, method)
    join(table2, tostring_joiner).to_stream().to(output)
    topics = {"topic1": topic1, "topic2": topic2}
    with TopologyTestDriver(app) as driver:
        for (topic, inputs), outputs in zip(SCRIPT, expected, strict=True):
            for key, value, ts in inputs:
                driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            assert records(driver, output) == outputs


def test_KTableKTableInnerJoinTest_testJoin() -> None:
    _run(
        "inner",
        [
            [],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10)],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
            [(0, None, 6), (1, None, 7)],
            [(2, "XXXX2+YY2", 13), (3, "XXXX3+YY3", 15)],
            [(2, None, 10), (3, None, 20)],
        ],
    )


def test_KTableKTableLeftJoinTest_testJoin() -> None:
    _run(
        "left",
        [
            [(0, "X0+null", 5), (1, "X1+null", 6)],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10), (2, "XX2+null", 7), (3, "XX3+null", 7)],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
            [(0, "XXX0+null", 6), (1, "XXX1+null", 7)],
            [
                (0, "XXXX0+null", 13),
                (1, "XXXX1+null", 13),
                (2, "XXXX2+YY2", 13),
                (3, "XXXX3+YY3", 15),
            ],
            [(0, None, 0), (1, None, 42), (2, None, 10), (3, None, 20)],
        ],
    )


def test_KTableKTableOuterJoinTest_testJoin() -> None:
    _run(
        "outer",
        [
            [(0, "X0+null", 5), (1, "X1+null", 6)],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10), (2, "XX2+null", 7), (3, "XX3+null", 7)],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
            [(0, "XXX0+null", 6), (1, "XXX1+null", 7)],
            [
                (0, "XXXX0+null", 13),
                (1, "XXXX1+null", 13),
                (2, "XXXX2+YY2", 13),
                (3, "XXXX3+YY3", 15),
            ],
            [(0, None, 0), (1, None, 42), (2, "null+YY2", 10), (3, "null+YY3", 20)],
        ],
    )
