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


# AbstractJoinIntegrationTest's `input`: out-of-order data included, every key 0.
TABLE_INPUT: list[tuple[str, str | None, int]] = [
    (LEFT, None, 1),
    (RIGHT, None, 2),
    (LEFT, "A", 3),
    (RIGHT, "a", 4),
    (LEFT, "B", 5),
    (RIGHT, "b", 6),
    (LEFT, None, 7),
    (RIGHT, None, 8),
    (LEFT, "C", 9),
    (RIGHT, "c", 10),
    (RIGHT, None, 11),
    (LEFT, None, 12),
    (RIGHT, None, 13),
    (RIGHT, "d", 7),  # out of order, with null as latest
    (LEFT, "D", 6),
    (LEFT, None, 2),
    (RIGHT, None, 3),
    (RIGHT, "e", 14),
    (LEFT, "E", 15),
    (LEFT, None, 10),  # out of order, with non-null as latest
    (RIGHT, None, 9),
    (LEFT, "F", 4),
    (RIGHT, "f", 3),
]
# What each input brings out, (value, timestamp) for key 0; None: nothing.
Out = tuple[str | None, int] | None
TABLE_EXPECTED: dict[str, list[Out]] = {
    "testInner": [
        *(None, None, None, ("A-a", 4), ("B-a", 5), ("B-b", 6), (None, 7), None, None),
        *(("C-c", 10), (None, 11), None, None, None, ("D-d", 7), (None, 7), None, None),
        *(("E-e", 15), (None, 14), None, None, ("F-f", 4)),
    ],
    "testLeft": [
        *(None, None, ("A-null", 3), ("A-a", 4), ("B-a", 5), ("B-b", 6), (None, 7), None),
        *(("C-null", 9), ("C-c", 10), ("C-null", 11), (None, 12), None, None, ("D-d", 7)),
        *((None, 7), None, None, ("E-e", 15), (None, 14), None, ("F-null", 4), ("F-f", 4)),
    ],
    "testOuter": [
        *(None, None, ("A-null", 3), ("A-a", 4), ("B-a", 5), ("B-b", 6), ("null-b", 7)),
        *((None, 8), ("C-null", 9), ("C-c", 10), ("C-null", 11), (None, 12), None),
        *(("null-d", 7), ("D-d", 7), ("null-d", 7), (None, 3), ("null-e", 14), ("E-e", 15)),
        *(("null-e", 14), (None, 9), ("F-null", 4), ("F-f", 4)),
    ],
}


_E_E = ("E-e", 15)
# Versioned tables (history retention 5 minutes) ignore out-of-order updates.
VERSIONED_INNER: list[Out] = [
    *(None, None, None, ("A-a", 4), ("B-a", 5), ("B-b", 6), (None, 7), None, None),
    *(("C-c", 10), (None, 11), None, None, None, None, None, None, None, _E_E),
]
VERSIONED_LEFT: list[Out] = [
    *(None, None, ("A-null", 3), ("A-a", 4), ("B-a", 5), ("B-b", 6), (None, 7), None),
    *(("C-null", 9), ("C-c", 10), ("C-null", 11), (None, 12), None, None, None, None),
]
TABLE_EXPECTED.update(
    {
        "testInnerWithVersionedStores": [*VERSIONED_INNER, None, None, None, None],
        "testLeftWithVersionedStores": [*VERSIONED_LEFT, None, None, _E_E, None, None, None, None],
        "testOuterWithVersionedStores": [
            *(*VERSIONED_LEFT[:6], ("null-b", 7), (None, 8), *VERSIONED_LEFT[8:12]),
            *(None, None, None, None, None),
            *(("null-e", 14), _E_E, None, None, None, None),
        ],
        "testInnerWithLeftVersionedOnly": [*VERSIONED_INNER, None, (None, 15), None, ("E-f", 15)],
        "testLeftWithLeftVersionedOnly": [
            *VERSIONED_LEFT,
            *(None, None, _E_E, None, ("E-null", 15), None, ("E-f", 15)),
        ],
        "testOuterWithLeftVersionedOnly": [
            *(*VERSIONED_LEFT[:6], ("null-b", 7), (None, 8), *VERSIONED_LEFT[8:12]),
            *(None, ("null-d", 7), None, None, (None, 3)),
            *(("null-e", 14), _E_E, None, ("E-null", 15), None, ("E-f", 15)),
        ],
        "testInnerWithRightVersionedOnly": [*VERSIONED_INNER, (None, 14), None, ("F-e", 14), None],
        "testLeftWithRightVersionedOnly": [
            *VERSIONED_LEFT[:14],
            *(("D-null", 6), (None, 2), None, None, _E_E, (None, 14), None, ("F-e", 14), None),
        ],
    }
)


@pytest.mark.parametrize("method", TABLE_EXPECTED)
def test_TableTableJoinIntegrationTest(method: str) -> None:
    """TableTableJoinIntegrationTest.<method>, with the cache disabled: results carry the
    later of the two rows' timestamps; a deletion's tombstone too."""
    app = sk.App(f"table-table-join-integration-test-{method}")
    topics = {n: app.topic(n, key_type=int, value_type=str) for n in (LEFT, RIGHT, "output")}
    both = "WithVersionedStores" in method
    left, right = (
        app.ktable(
            topics[side],
            history_retention=300 if both or f"With{side.title()}VersionedOnly" in method else None,
        )
        for side in (LEFT, RIGHT)
    )
    how = method.removeprefix("test").split("With")[0]
    join = {"Inner": left.join, "Left": left.left_join, "Outer": left.outer_join}[how]
    join(right, lambda v1, v2: f"{text(v1)}-{text(v2)}").to_stream().to(topics["output"])
    with TopologyTestDriver(app) as driver:
        for number, ((topic, value, ts), expected) in enumerate(
            zip(TABLE_INPUT, TABLE_EXPECTED[method], strict=True)
        ):
            driver.pipe(topics[topic], 0, value, timestamp_ms=ts)
            out = records(driver, topics["output"])
            assert out == ([] if expected is None else [(0, *expected)]), f"input {number}"


def test_StreamStreamJoinIntegrationTest_testSelfJoin() -> None:
    """A stream joined with itself: each record meets every earlier one both ways round."""
    app = sk.App("stream-stream-join-integration-test-selfJoin")
    left, output = (app.topic(n, key_type=int, value_type=str) for n in (LEFT, "output"))
    stream = app.stream(left)
    stream.join(
        stream,
        lambda v1, v2: f"{text(v1)}-{text(v2)}",
        window=JoinWindows.of_time_difference_and_grace(10, 24 * 3600),
    ).to(output)
    expected: list[list[str]] = [
        [],
        ["A-A"],
        ["B-A", "A-B", "B-B"],
        [],
        ["C-A", "C-B", "A-C", "B-C", "C-C"],
        [],
        ["D-A", "D-B", "D-C", "A-D", "B-D", "C-D", "D-D"],
    ]
    values = [None, "A", "B", None, "C", None, "D"]
    with TopologyTestDriver(app) as driver:
        for ts, (value, joined) in enumerate(zip(values, expected, strict=True), start=1):
            driver.pipe(left, 0, value, timestamp_ms=ts)
            assert records(driver, output) == [(0, j, ts) for j in joined], f"at {ts}"
