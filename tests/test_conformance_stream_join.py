"""Kafka Streams conformance: windowed stream-stream joins.

Ported from org.apache.kafka.streams.kstream.internals.KStreamKStreamJoinTest and
KStreamKStreamOuterJoinTest (Kafka 3.x, with the outer-join emit interval set to 0
as those tests set it). Each step pipes records and checks what came out since the
previous step, as Kafka's `checkAndClearProcessResult` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from conformance import records, tostring_joiner

import streamkit as sk
from streamkit.dsl.joins import JoinWindows
from streamkit.testing import TopologyTestDriver

Input = tuple[str, int, str, int]  # topic, key, value, timestamp
Output = tuple[int, str, int]
KEYS = (0, 1, 2, 3)


def _run(how: str, window: JoinWindows, steps: Sequence[tuple[list[Input], list[Output]]]) -> None:
    app = sk.App(f"kstream-{how}-join")
    topic1, topic2, out = (
        app.topic(name, key_type=int, value_type=str) for name in ("topic1", "topic2", "out")
    )
    stream = app.stream(topic1)
    join = {"inner": stream.join, "left": stream.left_join, "outer": stream.outer_join}[how]
    join(app.stream(topic2), tostring_joiner, window=window).to(out)
    topics = {"topic1": topic1, "topic2": topic2}
    with TopologyTestDriver(app) as driver:
        for number, (inputs, expected) in enumerate(steps):
            for topic, key, value, ts in inputs:
                driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            assert records(driver, out) == expected, f"step {number}"


def _all(topic: str, letter: str, ts: int) -> list[Input]:
    """Kafka's loop `for key in expectedKeys: pipeInput(key, letter + key, ts)`."""
    return [(topic, k, f"{letter}{k}", ts) for k in KEYS]


def _a_series() -> list[Input]:
    return [("topic1", k, f"A{k}", 1000 + k) for k in KEYS]


def test_KStreamKStreamJoinTest_testAsymmetricWindowingAfter() -> None:
    # JoinWindows.ofTimeDifferenceWithNoGrace(0).after(100)
    _run(
        "inner",
        JoinWindows(before=0, after=0.1),
        [
            (_a_series(), []),
            (_all("topic2", "a", 999), []),
            (_all("topic2", "b", 1000), [(0, "A0+b0", 1000)]),
            (_all("topic2", "c", 1001), [(0, "A0+c0", 1001), (1, "A1+c1", 1001)]),
            (
                _all("topic2", "d", 1002),
                [(0, "A0+d0", 1002), (1, "A1+d1", 1002), (2, "A2+d2", 1002)],
            ),
            (_all("topic2", "e", 1003), [(k, f"A{k}+e{k}", 1003) for k in KEYS]),
            (_all("topic2", "f", 1100), [(k, f"A{k}+f{k}", 1100) for k in KEYS]),
            (
                _all("topic2", "g", 1101),
                [(1, "A1+g1", 1101), (2, "A2+g2", 1101), (3, "A3+g3", 1101)],
            ),
            (_all("topic2", "h", 1102), [(2, "A2+h2", 1102), (3, "A3+h3", 1102)]),
            (_all("topic2", "i", 1103), [(3, "A3+i3", 1103)]),
            (_all("topic2", "j", 1104), []),
        ],
    )


def test_KStreamKStreamJoinTest_testAsymmetricWindowingBefore() -> None:
    # JoinWindows.ofTimeDifferenceWithNoGrace(0).before(100)
    _run(
        "inner",
        JoinWindows(before=0.1, after=0),
        [
            (_a_series(), []),
            (_all("topic2", "a", 899), []),
            (_all("topic2", "b", 900), [(0, "A0+b0", 1000)]),
            (_all("topic2", "c", 901), [(0, "A0+c0", 1000), (1, "A1+c1", 1001)]),
            (
                _all("topic2", "d", 902),
                [(0, "A0+d0", 1000), (1, "A1+d1", 1001), (2, "A2+d2", 1002)],
            ),
            (_all("topic2", "e", 903), [(k, f"A{k}+e{k}", 1000 + k) for k in KEYS]),
            (_all("topic2", "f", 1000), [(k, f"A{k}+f{k}", 1000 + k) for k in KEYS]),
            (
                _all("topic2", "g", 1001),
                [(1, "A1+g1", 1001), (2, "A2+g2", 1002), (3, "A3+g3", 1003)],
            ),
            (_all("topic2", "h", 1002), [(2, "A2+h2", 1002), (3, "A3+h3", 1003)]),
            (_all("topic2", "i", 1003), [(3, "A3+i3", 1003)]),
            (_all("topic2", "j", 1004), []),
        ],
    )


def test_KStreamKStreamOuterJoinTest_testOuterJoinDuplicates() -> None:
    # JoinWindows.ofTimeDifferenceAndGrace(100, 10)
    _run(
        "outer",
        JoinWindows.of(0.1, grace=0.01),
        [
            (
                [
                    ("topic1", 0, "A0", 0),
                    ("topic1", 0, "A0-0", 0),
                    ("topic2", 1, "a1", 0),
                    ("topic2", 1, "a1-0", 0),
                    ("topic2", 1, "a0", 111),
                    ("topic2", 3, "dummy", 211),
                ],
                [(1, "null+a1", 0), (1, "null+a1-0", 0), (0, "A0+null", 0), (0, "A0-0+null", 0)],
            ),
            (
                [
                    ("topic1", 2, "A2", 200),
                    ("topic1", 2, "A2-0", 200),
                    ("topic2", 2, "a2", 201),
                    ("topic2", 2, "a2-0", 201),
                ],
                [
                    (2, "A2+a2", 201),
                    (2, "A2-0+a2", 201),
                    (2, "A2+a2-0", 201),
                    (2, "A2-0+a2-0", 201),
                ],
            ),
            ([("topic2", 3, "dummy", 1500)], [(1, "null+a0", 111), (3, "null+dummy", 211)]),
        ],
    )


def _expired_non_joined(first: str, second: str, grace: float, flush_ts: int) -> None:
    """The four testXExpiredNonJoinedRecordsAreEmittedByTheYProcessor cases: records of
    `first` wait unmatched; a dummy on `second` emits them once their window closed."""
    swapped = first == "topic2"

    def joined(mine: str, theirs: str) -> str:
        return f"{theirs}+{mine}" if swapped else f"{mine}+{theirs}"

    other = "topic2" if first == "topic1" else "topic1"
    _run(
        "outer",
        JoinWindows.of(0.1, grace=grace),
        [
            ([(first, 0, "A0", 1), (first, 1, "A1", 2), (first, 0, "A0-0", 3)], []),
            ([(other, 1, "a1", 3)], [(1, joined("A1", "a1"), 3)]),
            (
                [(second, 2, "dummy", 401)],
                [(0, joined("A0", "null"), 1), (0, joined("A0-0", "null"), 3)],
            ),
            (
                [("topic2" if second == "topic1" else "topic1", 2, "dummy", flush_ts)],
                [(2, "dummy+dummy", flush_ts)],
            ),
        ],
    )


def test_KStreamKStreamOuterJoinTest_left_expired_by_left() -> None:
    """KStreamKStreamOuterJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor"""
    _expired_non_joined("topic1", "topic1", 0, 401)


def test_KStreamKStreamOuterJoinTest_left_expired_by_right() -> None:
    """KStreamKStreamOuterJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheRightProcessor"""
    _expired_non_joined("topic1", "topic2", 0, 402)


def test_KStreamKStreamOuterJoinTest_right_expired_by_left() -> None:
    """KStreamKStreamOuterJoinTest.testRightExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor"""
    _expired_non_joined("topic2", "topic1", 0, 402)


def test_KStreamKStreamOuterJoinTest_right_expired_by_right() -> None:
    """KStreamKStreamOuterJoinTest.testRightExpiredNonJoinedRecordsAreEmittedByTheRightProcessor"""
    _expired_non_joined("topic2", "topic2", 0, 402)


def test_KStreamKStreamOuterJoinTest_testOrdering() -> None:
    _run(
        "outer",
        JoinWindows.of(0.1),
        [
            ([("topic1", 0, "A0", 0), ("topic1", 1, "A1", 100)], []),
            ([("topic2", 1, "a1", 110)], [(0, "A0+null", 0), (1, "A1+a1", 110)]),
        ],
    )


def test_KStreamKStreamOuterJoinTest_testGracePeriod() -> None:
    _run(
        "outer",
        JoinWindows.of(0.1, grace=0.01),
        [
            ([("topic1", 0, "A0", 0), ("topic2", 1, "a1", 0)], []),
            ([("topic2", 0, "a0", 101), ("topic1", 1, "A1", 101)], []),
            ([("topic2", 0, "dummy", 211)], [(1, "null+a1", 0), (0, "A0+null", 0)]),
        ],
    )


def _default_suppliers_steps(dummy_ts: int) -> list[tuple[list[Input], list[Output]]]:
    """runOuterJoin / runLeftJoin: every record at time 0, and each of topic1 finds a
    partner; then a dummy far ahead, which finds none but has no window closed yet."""
    return [
        ([("topic1", k, f"A{k}", 0) for k in (0, 1)], []),
        ([("topic2", k, f"a{k}", 0) for k in (0, 1)], [(0, "A0+a0", 0), (1, "A1+a1", 0)]),
        ([("topic1", k, f"B{k}", 0) for k in (0, 1, 2)], [(0, "B0+a0", 0), (1, "B1+a1", 0)]),
        (
            _all("topic2", "b", 0),
            [(0, "A0+b0", 0), (0, "B0+b0", 0), (1, "A1+b1", 0), (1, "B1+b1", 0), (2, "B2+b2", 0)],
        ),
        (
            _all("topic1", "C", 0),
            [
                (0, "C0+a0", 0),
                (0, "C0+b0", 0),
                (1, "C1+a1", 0),
                (1, "C1+b1", 0),
                (2, "C2+b2", 0),
                (3, "C3+b3", 0),
            ],
        ),
        ([("topic1", 0, "dummy", dummy_ts)], []),
    ]


def test_KStreamKStreamOuterJoinTest_testOuterJoinWithDefaultSuppliers() -> None:
    _run("outer", JoinWindows.of(0.1), _default_suppliers_steps(400))


def test_KStreamKStreamLeftJoinTest_testLeftJoinedRecordsWithZeroAfterAreEmitted() -> None:
    # JoinWindows.ofTimeDifferenceWithNoGrace(100).after(0): a left record's window ends
    # at its own timestamp, so the next one closes it; a later partner still joins.
    _run(
        "left",
        JoinWindows(before=0.1, after=0),
        [
            (_a_series(), [(0, "A0+null", 1000), (1, "A1+null", 1001), (2, "A2+null", 1002)]),
            (_all("topic2", "a", 999), [(k, f"A{k}+a{k}", 1000 + k) for k in KEYS]),
            (_all("topic2", "b", 1000), [(k, f"A{k}+b{k}", 1000 + k) for k in KEYS]),
            (
                _all("topic2", "c", 1001),
                [(1, "A1+c1", 1001), (2, "A2+c2", 1002), (3, "A3+c3", 1003)],
            ),
            (_all("topic2", "d", 1002), [(2, "A2+d2", 1002), (3, "A3+d3", 1003)]),
            (_all("topic2", "e", 1003), [(3, "A3+e3", 1003)]),
            (_all("topic2", "f", 1100), []),
        ],
    )


def test_KStreamKStreamLeftJoinTest_testGracePeriod() -> None:
    _run(
        "left",
        JoinWindows.of(0.1, grace=0.01),
        [
            ([("topic1", k, f"A{k}", 0) for k in (0, 1)], []),
            (_all("topic2", "a", 101), []),
            ([("topic2", 0, "dummy", 1201)], [(0, "A0+null", 0), (1, "A1+null", 0)]),
        ],
    )


def test_KStreamKStreamLeftJoinTest_shouldNotEmitLeftJoinResultForAsymmetricWindow() -> None:
    # JoinWindows.ofTimeDifferenceWithNoGrace(100).before(0)
    _run(
        "left",
        JoinWindows(before=0, after=0.1),
        [
            ([("topic1", 0, "A0", 0), ("topic1", 1, "A1", 1)], []),
            ([("topic2", 0, "a0", 100)], [(0, "A0+a0", 100)]),
            ([("topic2", 1, "a1", 102)], [(1, "A1+null", 1)]),
        ],
    )


def _series(letter: str, ts: int) -> list[Input]:
    return _all("topic1", letter, ts)


def test_KStreamKStreamLeftJoinTest_testWindowing() -> None:
    """With testUpperWindowBound and testLowerWindowBound: records far behind stream time
    still join what the other side holds, and unmatched ones come out at once."""
    _run(
        "left",
        JoinWindows.of_time_difference_with_no_grace(0.1),
        [
            ([("topic1", k, f"A{k}", 0) for k in (0, 1)], []),
            (_all("topic2", "a", 0), [(0, "A0+a0", 0), (1, "A1+a1", 0)]),
            # testUpperWindowBound
            ([("topic2", k, f"b{k}", 1000 + k) for k in KEYS], []),
            (_series("B", 1100), [(k, f"B{k}+b{k}", 1100) for k in KEYS]),
            (_series("C", 1101), [(k, f"C{k}+b{k}", 1101) for k in (1, 2, 3)]),
            (_series("D", 1102), [(k, f"D{k}+b{k}", 1102) for k in (2, 3)]),
            (_series("E", 1103), [(3, "E3+b3", 1103)]),
            (_series("F", 1104), []),
            (
                [("topic1", 0, "dummy", 1405)],
                [
                    (0, "C0+null", 1101),
                    (0, "D0+null", 1102),
                    (1, "D1+null", 1102),
                    (0, "E0+null", 1103),
                    (1, "E1+null", 1103),
                    (2, "E2+null", 1103),
                    (0, "F0+null", 1104),
                    (1, "F1+null", 1104),
                    (2, "F2+null", 1104),
                    (3, "F3+null", 1104),
                ],
            ),
            # testLowerWindowBound: far behind stream time (1405)
            (_series("G", 899), [(k, f"G{k}+null", 899) for k in KEYS]),
            (
                _series("H", 900),
                [(0, "H0+b0", 1000), (1, "H1+null", 900), (2, "H2+null", 900), (3, "H3+null", 900)],
            ),
            (
                _series("I", 901),
                [(0, "I0+b0", 1000), (1, "I1+b1", 1001), (2, "I2+null", 901), (3, "I3+null", 901)],
            ),
            (
                _series("J", 902),
                [(0, "J0+b0", 1000), (1, "J1+b1", 1001), (2, "J2+b2", 1002), (3, "J3+null", 902)],
            ),
            (_series("K", 903), [(k, f"K{k}+b{k}", 1000 + k) for k in KEYS]),
            ([("topic1", 0, "dummy", 1203)], [(0, "dummy+null", 1203)]),
        ],
    )


def _first_two(topic: str, letter: str, ts: int) -> list[Input]:
    return [(topic, k, f"{letter}{k}", ts) for k in (0, 1)]


def _at_zero_steps() -> list[tuple[list[Input], list[Output]]]:
    """The steps testJoin and testOuterJoin share: every record at time 0."""
    return [
        (_first_two("topic1", "A", 0), []),
        (_first_two("topic2", "a", 0), [(0, "A0+a0", 0), (1, "A1+a1", 0)]),
        (_all("topic1", "B", 0), [(0, "B0+a0", 0), (1, "B1+a1", 0)]),
        (
            _all("topic2", "b", 0),
            [
                (0, "A0+b0", 0),
                (0, "B0+b0", 0),
                (1, "A1+b1", 0),
                (1, "B1+b1", 0),
                (2, "B2+b2", 0),
                (3, "B3+b3", 0),
            ],
        ),
        (
            _all("topic1", "C", 0),
            [
                (0, "C0+a0", 0),
                (0, "C0+b0", 0),
                (1, "C1+a1", 0),
                (1, "C1+b1", 0),
                (2, "C2+b2", 0),
                (3, "C3+b3", 0),
            ],
        ),
        (
            _first_two("topic2", "c", 0),
            [(0, f"{x}0+c0", 0) for x in "ABC"] + [(1, f"{x}1+c1", 0) for x in "ABC"],
        ),
    ]


def test_KStreamKStreamJoinTest_testJoin() -> None:
    _run("inner", JoinWindows.of_time_difference_with_no_grace(0.1), _at_zero_steps())


def test_KStreamKStreamJoinTest_testOuterJoin() -> None:
    # JoinWindows.ofTimeDifferenceAndGrace(100 ms, 24 h): no window closes, so no
    # unmatched record comes out.
    _run("outer", JoinWindows.of_time_difference_and_grace(0.1, 86_400), _at_zero_steps())


def _windowing_half(held: str, letter: str, other: str, probes: str, base: int) -> list[Any]:
    """Half of testWindowing: `held` records at base + key; then `other` probes each key
    at base + 100 ... base + 104 (the upper window bound: one key fewer each time), and
    at base - 101 ... base - 97 (the lower bound: one key more each time)."""

    def joined(probe: str, keys: Sequence[int], ts: int | None) -> list[Output]:
        def value(k: int) -> str:
            return f"{letter}{k}+{probe}{k}" if held == "topic1" else f"{probe}{k}+{letter}{k}"

        return [(k, value(k), base + k if ts is None else ts) for k in keys]

    steps: list[Any] = [([(held, k, f"{letter}{k}", base + k) for k in KEYS], [])]
    for i, probe in enumerate(probes[:5]):
        steps.append((_all(other, probe, base + 100 + i), joined(probe, KEYS[i:], base + 100 + i)))
    for i, probe in enumerate(probes[5:]):
        steps.append((_all(other, probe, base - 101 + i), joined(probe, KEYS[:i], None)))
    return steps


def test_KStreamKStreamJoinTest_testWindowing() -> None:
    steps = [
        (_first_two("topic1", "A", 0), []),
        (_first_two("topic2", "a", 0), [(0, "A0+a0", 0), (1, "A1+a1", 0)]),
        *_windowing_half("topic1", "B", "topic2", "bcdefghijk", 1000),
        *_windowing_half("topic2", "l", "topic1", "CDEFGHIJKL", 2000),
    ]
    _run("inner", JoinWindows.of_time_difference_with_no_grace(0.1), steps)


def test_KStreamKStreamLeftJoinTest_testLeftJoinDuplicates() -> None:
    _run(
        "left",
        JoinWindows.of_time_difference_and_grace(0.1, 0.01),
        [
            (
                [
                    ("topic1", 0, "A0", 0),
                    ("topic1", 0, "A0-0", 0),
                    ("topic2", 1, "a0", 111),
                    ("topic2", 2, "dummy", 500),
                ],
                [(0, "A0+null", 0), (0, "A0-0+null", 0)],
            ),
            (
                [("topic1", 2, "A2", 1000), ("topic1", 2, "A2-0", 1000), ("topic2", 2, "a2", 1001)],
                [(2, "A2+a2", 1001), (2, "A2-0+a2", 1001)],
            ),
            ([("topic2", 3, "a3", 315)], []),
        ],
    )


def _left_expired(by: str, flush_ts: int) -> None:
    """testLeftExpiredNonJoinedRecordsAreEmittedByThe{Left,Right}Processor."""
    other = "topic2" if by == "topic1" else "topic1"
    _run(
        "left",
        JoinWindows.of_time_difference_and_grace(0.1, 0),
        [
            ([("topic1", 0, "A0", 1), ("topic1", 1, "A1", 2), ("topic1", 0, "A0-0", 3)], []),
            ([("topic2", 1, "a1", 3)], [(1, "A1+a1", 3)]),
            ([(by, 2, "dummy", 401)], [(0, "A0+null", 1), (0, "A0-0+null", 3)]),
            ([(other, 2, "dummy", flush_ts)], [(2, "dummy+dummy", flush_ts)]),
        ],
    )


def test_KStreamKStreamLeftJoinTest_left_expired_by_left() -> None:
    """KStreamKStreamLeftJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor"""
    _left_expired("topic1", 401)


def test_KStreamKStreamLeftJoinTest_left_expired_by_right() -> None:
    """KStreamKStreamLeftJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheRightProcessor"""
    _left_expired("topic2", 402)


@pytest.mark.parametrize("by", ["topic1", "topic2"])
def test_KStreamKStreamLeftJoinTest_testRightNonJoinedRecordsAreNeverEmitted(by: str) -> None:
    """testRightNonJoinedRecordsAreNeverEmittedByThe{Left,Right}Processor."""
    other = "topic2" if by == "topic1" else "topic1"
    _run(
        "left",
        JoinWindows.of_time_difference_and_grace(0.1, 0),
        [
            ([("topic2", 0, "A0", 1), ("topic2", 1, "A1", 2), ("topic2", 0, "A0-0", 3)], []),
            ([("topic1", 1, "a1", 3)], [(1, "a1+A1", 3)]),
            ([(by, 2, "dummy", 401)], []),
            ([(other, 2, "dummy", 402)], [(2, "dummy+dummy", 402)]),
        ],
    )


def test_KStreamKStreamLeftJoinTest_testLeftJoinWithDefaultSuppliers() -> None:
    window = JoinWindows.of_time_difference_with_no_grace(0.1)
    _run("left", window, _default_suppliers_steps(1000))


def test_KStreamKStreamLeftJoinTest_testOrdering() -> None:
    _run(
        "left",
        JoinWindows.of_time_difference_with_no_grace(0.1),
        [
            ([("topic1", 0, "A0", 0), ("topic1", 1, "A1", 100)], []),
            ([("topic2", 1, "a1", 110)], [(0, "A0+null", 0), (1, "A1+a1", 110)]),
        ],
    )


def _sum_join(app: sk.App) -> tuple[sk.Topic, sk.Topic, sk.Topic]:
    left, right = (app.topic(n, key_type=str, value_type=int) for n in ("left", "right"))
    out = app.topic("out", key_type=str, value_type=int)
    window = JoinWindows.of_time_difference_with_no_grace(0.1)
    app.stream(left).join(app.stream(right), lambda a, b: a + b, window=window).to(out)
    return left, right, out


def test_KStreamKStreamJoinTest_runJoin() -> None:
    """The joins of shouldJoinWithCustomStoreSuppliers, ...WithDslStoreSuppliers...,
    shouldJoinWithNonTimestampedStore (store suppliers have no counterpart here)."""
    app = sk.App("kstream-sum-join")
    left, right, out = _sum_join(app)
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "A", 1, timestamp_ms=1)
        driver.pipe(left, "B", 1, timestamp_ms=2)
        driver.pipe(right, "A", 1, timestamp_ms=1)
        driver.pipe(right, "B", 2, timestamp_ms=2)
        assert records(driver, out) == [("A", 2, 1), ("B", 3, 2)]


def test_KStreamKStreamJoinTest_shouldLogAndMeterOnSkippedRecordsWithNullValue() -> None:
    app = sk.App("kstream-join-null-value")
    left, _right, out = _sum_join(app)
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "A", None, timestamp_ms=0)
        assert records(driver, out) == []
    assert app.metrics.value("dropped_records", reason="null value") == 1


def _outer_long(window: JoinWindows) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    """KStreamKStreamOuterJoinTest's topology: topic2 carries longs."""
    app = sk.App("kstream-outer-join-long")
    topic1 = app.topic("topic1", key_type=int, value_type=str)
    topic2 = app.topic("topic2", key_type=int, value_type=int)
    out = app.topic("out", key_type=int, value_type=str)
    app.stream(topic1).outer_join(app.stream(topic2), tostring_joiner, window=window).to(out)
    return app, topic1, topic2, out


def test_KStreamKStreamOuterJoinTest_testEmitAllNonJoinedResultsForAsymmetricWindow() -> None:
    # JoinWindows.ofTimeDifferenceWithNoGrace(5 ms).after(20 ms)
    app, topic1, topic2, out = _outer_long(JoinWindows(before=0.005, after=0.02, grace=0))
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic1, 0, "A0", timestamp_ms=29)
        driver.pipe(topic1, 1, "A1", timestamp_ms=30)
        driver.pipe(topic2, 2, 12, timestamp_ms=31)
        driver.pipe(topic2, 3, 13, timestamp_ms=36)
        assert records(driver, out) == []
        driver.pipe(topic2, 4, 14, timestamp_ms=37)
        assert records(driver, out) == [(2, "null+12", 31)]
        driver.pipe(topic2, 5, 15, timestamp_ms=50)
        assert records(driver, out) == [(0, "A0+null", 29), (3, "null+13", 36), (4, "null+14", 37)]


def test_KStreamKStreamOuterJoinTest_testShouldNotEmitLeftJoinResultForAsymmetricBeforeWindow() -> (
    None
):
    # JoinWindows.ofTimeDifferenceWithNoGrace(100 ms).before(0)
    app, topic1, topic2, out = _outer_long(JoinWindows(before=0, after=0.1, grace=0))
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic1, 0, "A0", timestamp_ms=0)
        driver.pipe(topic1, 1, "A1", timestamp_ms=1)
        assert records(driver, out) == []
        driver.pipe(topic2, 0, 10, timestamp_ms=100)
        assert records(driver, out) == [(0, "A0+10", 100)]
        driver.pipe(topic2, 1, 11, timestamp_ms=102)
        assert records(driver, out) == [(1, "A1+null", 1)]
        driver.pipe(topic2, 2, 12, timestamp_ms=103)
        assert records(driver, out) == [(1, "null+11", 102)]
        driver.pipe(topic1, 2, "A2", timestamp_ms=103)
        assert records(driver, out) == [(2, "A2+12", 103)]


def test_KStreamKStreamOuterJoinTest_testShouldNotEmitLeftJoinResultForAsymmetricAfterWindow() -> (
    None
):
    # JoinWindows.ofTimeDifferenceWithNoGrace(100 ms).after(0)
    app, topic1, topic2, out = _outer_long(JoinWindows(before=0.1, after=0, grace=0))
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic1, 0, "A0", timestamp_ms=0)
        driver.pipe(topic1, 1, "A1", timestamp_ms=1)
        assert records(driver, out) == [(0, "A0+null", 0)]
        driver.pipe(topic2, 1, 11, timestamp_ms=1)
        assert records(driver, out) == [(1, "A1+11", 1)]
        driver.pipe(topic2, 2, 12, timestamp_ms=101)
        driver.pipe(topic2, 3, 13, timestamp_ms=101)
        assert records(driver, out) == []
        driver.pipe(topic1, 2, "A2", timestamp_ms=201)
        assert records(driver, out) == [(2, "A2+12", 201)]


def test_KStreamKStreamOuterJoinTest_testShouldForwardCurrentHeaders() -> None:
    """Unmatched records come out with the headers of the record that moved stream
    time on; a joined one with its triggering record's."""
    app, topic1, topic2, out = _outer_long(JoinWindows.of_time_difference_and_grace(0.1, 0.01))
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic1, 0, "A0", timestamp_ms=0, headers=(("h", b"\x01"),))
        driver.pipe(topic2, 1, 10, timestamp_ms=0, headers=(("h", b"\x02"),))
        driver.pipe(topic2, 3, 100, timestamp_ms=211, headers=(("h", b"\x03"),))
        got = [(r.key, r.value, r.timestamp, tuple(r.headers)) for r in driver.read_records(out)]
        assert got == [
            (1, "null+10", 0, (("h", b"\x03"),)),
            (0, "A0+null", 0, (("h", b"\x03"),)),
        ]
        driver.pipe(topic1, 2, "A2", timestamp_ms=200, headers=(("h", b"\x04"),))
        driver.pipe(topic2, 2, 12, timestamp_ms=200, headers=(("h", b"\x05"),))
        got = [(r.key, r.value, r.timestamp, tuple(r.headers)) for r in driver.read_records(out)]
        assert got == [(2, "A2+12", 200, (("h", b"\x05"),))]


def _self_join(window: JoinWindows, inputs: list[tuple[str, str, int]], two: bool) -> list[Output]:
    """A stream joined with itself (two=False) or with a second stream of its topic."""
    app = sk.App("kstream-self-join")
    topic = app.topic("topic1", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=str)
    stream = app.stream(topic)
    other = app.stream(topic) if two else stream
    stream.join(other, lambda a, b: a + b, window=window).to(out)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in inputs:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        return records(driver, out)


# What Kafka's KStreamKStreamSelfJoinTest compares the optimized self-join with: the
# inner join of the topic's records with themselves (each record joins itself too).
_SELF_BASIC = [("A", "1", 1), ("B", "1", 2), ("A", "2", 3), ("B", "2", 4), ("B", "3", 5)]
_SELF_BASIC_OUT = [
    ("A", "11", 1), ("B", "11", 2),
    ("A", "21", 3), ("A", "12", 3), ("A", "22", 3),
    ("B", "21", 4), ("B", "12", 4), ("B", "22", 4),
    ("B", "31", 5), ("B", "32", 5), ("B", "13", 5), ("B", "23", 5), ("B", "33", 5),
]  # fmt: skip
_SELF_LATER = [("C", "1", 16000), ("D", "1", 17000), ("A", "5", 30000)]
_SELF_LATER_OUT = [("C", "11", 16000), ("D", "11", 17000), ("A", "55", 30000)]


@pytest.mark.parametrize("two", [False, True], ids=["WithSingleStream", "WithTwoStreams"])
def test_KStreamKStreamSelfJoinTest_shouldMatchInnerJoinWithSelfJoin(two: bool) -> None:
    window = JoinWindows.of_time_difference_with_no_grace(0.1)
    assert _self_join(window, _SELF_BASIC, two) == _SELF_BASIC_OUT


def test_KStreamKStreamSelfJoinTest_DifferentBeforeAfterWindows() -> None:
    """KStreamKStreamSelfJoinTest.shouldMatchInnerJoinWithSelfJoinDifferentBeforeAfterWindows"""
    window = JoinWindows.of_time_difference_and_grace(11, 10)
    inputs = [("A", "1", 0), ("A", "2", 11000), ("B", "1", 12000), ("A", "3", 13000)]
    inputs += [("A", "4", 15000), *_SELF_LATER]
    assert _self_join(window, inputs, True) == [
        ("A", "11", 0),
        ("A", "21", 11000), ("A", "12", 11000), ("A", "22", 11000),
        ("B", "11", 12000),
        ("A", "32", 13000), ("A", "23", 13000), ("A", "33", 13000),
        ("A", "42", 15000), ("A", "43", 15000),
        ("A", "24", 15000), ("A", "34", 15000), ("A", "44", 15000),
        *_SELF_LATER_OUT,
    ]  # fmt: skip


def test_KStreamKStreamSelfJoinTest_shouldMatchInnerJoinWithSelfJoinOutOfOrderMessages() -> None:
    """The last record (A5 at 6000) is 24 s behind stream time: it is not kept, and
    joins only what each side's store still holds (after 30000 - 20000)."""
    window = JoinWindows.of_time_difference_with_no_grace(10)
    inputs = [("A", "1", 0), ("A", "2", 9999), ("B", "1", 11000), ("A", "3", 13000)]
    inputs += [("A", "4", 15000), *_SELF_LATER, ("A", "5", 6000)]
    assert _self_join(window, inputs, True) == [
        ("A", "11", 0),
        ("A", "21", 9999), ("A", "12", 9999), ("A", "22", 9999),
        ("B", "11", 11000),
        ("A", "32", 13000), ("A", "23", 13000), ("A", "33", 13000),
        ("A", "42", 15000), ("A", "43", 15000),
        ("A", "24", 15000), ("A", "34", 15000), ("A", "44", 15000),
        *_SELF_LATER_OUT,
        ("A", "53", 13000), ("A", "54", 15000), ("A", "35", 13000), ("A", "45", 15000),
    ]  # fmt: skip
