"""Kafka Streams conformance: StreamStreamJoinIntegrationTest (cache disabled).

Ported from org.apache.kafka.streams.integration.StreamStreamJoinIntegrationTest with
AbstractJoinIntegrationTest's `inputWithoutOutOfOrderData`: every record has the key 0
but the last two, whose key is null; the window is ofTimeDifferenceAndGrace(10 s,
24 h). A left or outer join passes a null-key record on at once (KIP-962).
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, text

import streamkit as sk
from streamkit.dsl.joins import JoinWindows
from streamkit.testing import TopologyTestDriver

LEFT, RIGHT = "left", "right"
# (topic, key, value, timestamp) in order; then what each record brings out.
INPUT: list[tuple[str, int | None, str | None, int]] = [
    (LEFT, 0, None, 1),
    (RIGHT, 0, None, 2),
    (LEFT, 0, "A", 3),
    (RIGHT, 0, "a", 4),
    (LEFT, 0, "B", 5),
    (RIGHT, 0, "b", 6),
    (LEFT, 0, None, 7),
    (RIGHT, 0, None, 8),
    (LEFT, 0, "C", 9),
    (RIGHT, 0, "c", 10),
    (RIGHT, 0, None, 11),
    (LEFT, 0, None, 12),
    (RIGHT, 0, None, 13),
    (RIGHT, 0, "d", 14),
    (LEFT, 0, "D", 15),
    (LEFT, None, "E", 16),
    (RIGHT, None, "e", 17),
]
INNER: list[list[tuple[Any, str, int]]] = [
    [],
    [],
    [],
    [(0, "A-a", 4)],
    [(0, "B-a", 5)],
    [(0, "A-b", 6), (0, "B-b", 6)],
    [],
    [],
    [(0, "C-a", 9), (0, "C-b", 9)],
    [(0, "A-c", 10), (0, "B-c", 10), (0, "C-c", 10)],
    [],
    [],
    [],
    [(0, "A-d", 14), (0, "B-d", 14), (0, "C-d", 14)],
    [(0, "D-a", 15), (0, "D-b", 15), (0, "D-c", 15), (0, "D-d", 15)],
]
EXPECTED = {
    "testInner": [*INNER, [], []],
    "testLeft": [*INNER, [(None, "E-null", 16)], []],
    "testOuter": [*INNER, [(None, "E-null", 16)], [(None, "null-e", 17)]],
}


@pytest.mark.parametrize("method", EXPECTED)
def test_StreamStreamJoinIntegrationTest(method: str) -> None:
    """StreamStreamJoinIntegrationTest.<method>, with the cache disabled."""
    app = sk.App(f"stream-stream-join-integration-test-{method}")
    topics = {n: app.topic(n, key_type=int, value_type=str) for n in (LEFT, RIGHT, "output")}
    stream = app.stream(topics[LEFT])
    join = {"testInner": stream.join, "testLeft": stream.left_join, "testOuter": stream.outer_join}
    join[method](
        app.stream(topics[RIGHT]),
        lambda v1, v2: f"{text(v1)}-{text(v2)}",
        window=JoinWindows.of_time_difference_and_grace(10, 24 * 3600),
    ).to(topics["output"])
    with TopologyTestDriver(app) as driver:
        for number, ((topic, key, value, ts), expected) in enumerate(
            zip(INPUT, EXPECTED[method], strict=True)
        ):
            driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            assert records(driver, topics["output"]) == expected, f"input {number}"
