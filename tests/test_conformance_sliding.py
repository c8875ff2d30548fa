"""Kafka Streams conformance: sliding windows.

Ported from org.apache.kafka.streams.kstream.internals.KStreamSlidingWindowAggregateTest:
SlidingWindows.ofTimeDifferenceAndGrace(10 ms, 50 ms); Kafka keeps each window's
last result, by window start, with its timestamp.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import string_init, string_topics, tostring_adder

import streamkit as sk
from streamkit.testing import TopologyTestDriver

CASES: dict[str, tuple[list[tuple[str, int]], dict[int, tuple[str, int]]]] = {
    "testAggregateSmallInput": (
        [("1", 10), ("2", 15), ("3", 20), ("4", 22), ("5", 30)],
        {
            0: ("0+1", 10),
            5: ("0+1+2", 15),
            10: ("0+1+2+3", 20),
            11: ("0+2+3", 20),
            12: ("0+2+3+4", 22),
            16: ("0+3+4", 22),
            20: ("0+3+4+5", 30),
            21: ("0+4+5", 30),
            23: ("0+5", 30),
        },
    ),
    "testReduceSmallInput": (
        [("1", 10), ("2", 14), ("3", 15), ("4", 22), ("5", 26), ("6", 30)],
        {
            0: ("1", 10),
            4: ("1+2", 14),
            5: ("1+2+3", 15),
            11: ("2+3", 15),
            12: ("2+3+4", 22),
            15: ("3+4", 22),
            16: ("4+5", 26),
            20: ("4+5+6", 30),
            23: ("5+6", 30),
            27: ("6", 30),
        },
    ),
}


@pytest.mark.parametrize("method", CASES)
def test_KStreamSlidingWindowAggregateTest(method: str) -> None:
    """KStreamSlidingWindowAggregateTest.<method>: aggregate with TOSTRING_ADDER, or
    reduce with MockReducer.STRING_ADDER (`a+b`)."""
    inputs, expected = CASES[method]
    app = sk.App("sliding")
    (topic,) = string_topics(app, "topic")
    out = app.topic("out", key_type=Any, value_type=str)
    windowed = (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SlidingWindows.of_time_difference_and_grace(0.010, 0.050))
    )
    if "Reduce" in method:
        table = windowed.reduce(lambda a, b: f"{a}+{b}", close_idle_after=None)
    else:
        table = windowed.aggregate(string_init, tostring_adder, close_idle_after=None)
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for value, ts in inputs:
            driver.pipe(topic, "A", value, timestamp_ms=ts)
        last = {}
        for r in driver.read_records(out):
            last[r.key[1]] = (r.value, r.timestamp)  # key: [key, start, end]
    assert last == expected
