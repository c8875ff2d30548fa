"""Kafka Streams conformance: sliding windows.

Ported from org.apache.kafka.streams.kstream.internals.KStreamSlidingWindowAggregateTest:
SlidingWindows.ofTimeDifferenceAndGrace(10 ms, 50 ms); Kafka keeps each window's
last result, by window start, with its timestamp.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, string_init, string_topics, tostring_adder

import streamkit as sk
from streamkit.testing import TopologyTestDriver

W = sk.Windowed

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


# SlidingWindowedKStreamImplTest: SlidingWindows.ofTimeDifferenceAndGrace(100 ms, 1 s)
# and processData; per method, the value of each window, in Kafka's store order.
IMPL_INPUT = [("1", "1", 100), ("1", "2", 150), ("1", "3", 500), ("2", "10", 200)]
IMPL_INPUT += [("2", "20", 150)]
IMPL_WINDOWS = [("1", 0, 100, 100), ("1", 50, 150, 150), ("1", 101, 201, 150)]
IMPL_WINDOWS += [("1", 400, 500, 500), ("2", 50, 150, 150), ("2", 100, 200, 200)]
IMPL_WINDOWS += [("2", 151, 251, 200)]
IMPL_VALUES: dict[str, list[Any]] = {
    "count": [1, 2, 1, 1, 1, 2, 1],
    "reduce": ["1", "1+2", "2", "3", "20", "10+20", "10"],
    "aggregate": ["0+1", "0+1+2", "0+2", "0+3", "0+20", "0+10+20", "0+10"],
}


@pytest.mark.parametrize("how", IMPL_VALUES)
@pytest.mark.parametrize("store", ["materialized", None])
def test_SlidingWindowedKStreamImplTest(how: str, store: str | None) -> None:
    """shouldCountSlidingWindows, shouldReduceSlidingWindows, shouldAggregateSlidingWindows
    (the last result per window) and, with a store, shouldMaterializeCount /
    shouldMaterializeReduced / shouldMaterializeAggregated (the store's rows)."""
    app = sk.App(f"sliding-impl-{how}")
    (topic,) = string_topics(app, "topic")
    out = app.topic("out", key_type=Any, value_type=Any)
    windowed = (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SlidingWindows.of_time_difference_and_grace(0.1, 1))
    )
    if how == "count":
        table = windowed.count(name=store)
    elif how == "reduce":
        table = windowed.reduce(lambda a, b: f"{a}+{b}", name=store)  # STRING_ADDER
    else:
        table = windowed.aggregate(string_init, tostring_adder, name=store)
    table.to_stream().to(out)
    expected = {
        W(key, start, end): (value, ts)
        for (key, start, end, ts), value in zip(IMPL_WINDOWS, IMPL_VALUES[how], strict=True)
    }
    with TopologyTestDriver(app) as driver:
        for key, value, ts in IMPL_INPUT:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        last = {W(*key): (value, ts) for key, value, ts in records(driver, out)}
        assert last == expected
        if store is not None:
            assert driver.timestamped_store(store) == expected


def test_SlidingWindowedKStreamImplTest_shouldDropWindowsOutsideOfRetention() -> None:
    """Kafka's store keeps 1200 ms here; streamkit's the difference plus the grace
    (1100 ms): the same windows remain."""
    app = sk.App("sliding-retention")
    (topic,) = string_topics(app, "topic")
    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SlidingWindows.of_time_difference_and_grace(0.1, 1))
        .aggregate(string_init, tostring_adder, name="aggregated")
    )
    with TopologyTestDriver(app) as driver:
        for value, ts in [("2", 100), ("3", 500), ("4", 799), ("4", 1000), ("5", 2000)]:
            driver.pipe(topic, "1", value, timestamp_ms=ts)
        assert driver.timestamped_store("aggregated") == {
            W("1", 900, 1000): ("0+4", 1000),
            W("1", 1900, 2000): ("0+5", 2000),
        }


# KStreamSlidingWindowAggregateTest's small, early-record and no-grace cases: (time difference
# and grace in ms, the values and timestamps piped for key A, then every result per
# window start as a set of (value, timestamp), as Kafka gathers them: with updates,
# and with emit-final, EmitStrategy onWindowClose).
Gathered = dict[int, set[tuple[str, int]]]
SMALL_EARLY = [("1", 0), ("2", 5), ("3", 6), ("4", 3), ("5", 13), ("6", 10)]
EARLY_UPDATES: Gathered = {
    0: {("0+1", 0), ("0+1+2", 5), ("0+1+2+3", 6), ("0+1+2+3+4", 6)}
    | {("0+1+2+3+4+5", 13), ("0+1+2+3+4+5+6", 13)},
    1: {("0+2", 5), ("0+2+3", 6), ("0+2+3+4", 6), ("0+2+3+4+5", 13), ("0+2+3+4+5+6", 13)},
    4: {("0+2+3", 6), ("0+2+3+5", 13), ("0+2+3+5+6", 13)},
    6: {("0+3", 6), ("0+3+5", 13), ("0+3+5+6", 13)},
    7: {("0+5", 13), ("0+5+6", 13)},
    11: {("0+5", 13)},
}
# fmt: off
EARLY_FINAL: Gathered = {
    0: {("0+1+2+3+4+5+6", 13)}, 1: {("0+2+3+4+5+6", 13)}, 4: {("0+2+3+5+6", 13)},
    6: {("0+3+5+6", 13)}, 7: {("0+5+6", 13)}, 11: {("0+5", 13)},
}
# fmt: on
EARLY_CASES: dict[str, tuple[int, int, list[tuple[str, int]], Gathered, Gathered]] = {
    "testEarlyRecordsSmallInput": (
        50,
        0,
        [*SMALL_EARLY, ("7", 70)],
        {**EARLY_UPDATES, 20: {("0+7", 70)}},
        EARLY_FINAL,
    ),
    "testEarlyNoGracePeriodSmallInput": (
        50,
        0,
        [*SMALL_EARLY, ("6", 70)],
        {**EARLY_UPDATES, 20: {("0+6", 70)}},
        EARLY_FINAL,
    ),
    "testEarlyRecordsRepeatedInput": (
        5,
        0,
        [("1", 0), ("2", 2), ("3", 4), ("4", 0), ("5", 2), ("6", 2), ("7", 0), ("8", 7)],
        {
            0: {("0+1", 0), ("0+1+2", 2), ("0+1+2+3", 4), ("0+1+2+3+4", 4)}
            | {("0+1+2+3+4+5", 4), ("0+1+2+3+4+5+6", 4), ("0+1+2+3+4+5+6+7", 4)},
            1: {("0+2", 2), ("0+2+3", 4), ("0+2+3+5", 4), ("0+2+3+5+6", 4)},
            2: {("0+2+3+5+6+8", 7)},
            3: {("0+3", 4), ("0+3+8", 7)},
            5: {("0+8", 7)},
        },
        {0: {("0+1+2+3+4+5+6+7", 4)}, 1: {("0+2+3+5+6", 4)}},
    ),
    # Kafka's current testAggregateSmallInput / testReduceSmallInput (grace 5 ms).
    "testAggregateSmallInput": (
        10,
        5,
        [("1", 10), ("2", 10), ("3", 14), ("4", 15), ("5", 20), ("6", 22), ("7", 30)],
        {
            0: {("0+1", 10), ("0+1+2", 10)},
            4: {("0+1+2+3", 14)},
            5: {("0+1+2+3+4", 15)},
            10: {("0+1+2+3+4+5", 20)},
            11: {("0+3", 14), ("0+3+4", 15), ("0+3+4+5", 20)},
            12: {("0+3+4+5+6", 22)},
            15: {("0+4", 15), ("0+4+5", 20), ("0+4+5+6", 22)},
            16: {("0+5", 20), ("0+5+6", 22)},
            20: {("0+5+6+7", 30)},
            21: {("0+6", 22), ("0+6+7", 30)},
            23: {("0+7", 30)},
        },
        {0: {("0+1+2", 10)}, 4: {("0+1+2+3", 14)}, 5: {("0+1+2+3+4", 15)}}
        | {10: {("0+1+2+3+4+5", 20)}, 11: {("0+3+4+5", 20)}, 12: {("0+3+4+5+6", 22)}},
    ),
    "testReduceSmallInput": (
        10,
        5,
        [("1", 10), ("2", 14), ("3", 15), ("4", 22), ("5", 26), ("6", 30)],
        {
            0: {("1", 10)},
            4: {("1+2", 14)},
            5: {("1+2+3", 15)},
            11: {("2", 14), ("2+3", 15)},
            12: {("2+3+4", 22)},
            15: {("3", 15), ("3+4", 22)},
            16: {("4", 22), ("4+5", 26)},
            20: {("4+5+6", 30)},
            23: {("5", 26), ("5+6", 30)},
            27: {("6", 30)},
        },
        {0: {("1", 10)}, 4: {("1+2", 14)}, 5: {("1+2+3", 15)}, 11: {("2+3", 15)}}
        | {12: {("2+3+4", 22)}},
    ),
    "testNoGracePeriodSmallInput": (
        50,
        0,
        [("1", 100), ("2", 105), ("3", 106), ("4", 103), ("5", 113), ("6", 110)],
        {
            50: {("0+1", 100)},
            55: {("0+1+2", 105)},
            56: {("0+1+2+3", 106), ("0+1+2+3+4", 106)},
            63: {("0+1+2+3+4+5", 113), ("0+1+2+3+4+5+6", 113)},
            101: {("0+2", 105), ("0+2+3", 106), ("0+2+3+4", 106)}
            | {("0+2+3+4+5", 113), ("0+2+3+4+5+6", 113)},
            104: {("0+2+3", 106), ("0+2+3+5", 113), ("0+2+3+5+6", 113)},
            106: {("0+3", 106), ("0+3+5", 113), ("0+3+5+6", 113)},
            107: {("0+5", 113), ("0+5+6", 113)},
            111: {("0+5", 113)},
        },
        {50: {("0+1", 100)}, 55: {("0+1+2", 105)}, 56: {("0+1+2+3+4", 106)}},
    ),
}


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("method", EARLY_CASES)
def test_KStreamSlidingWindowAggregateTest_gathered(method: str, emit: str) -> None:
    difference, grace, inputs, updates, finals = EARLY_CASES[method]
    app = sk.App("sliding-early")
    (topic,) = string_topics(app, "topic")
    out = app.topic("out", key_type=Any, value_type=str)
    windows = sk.SlidingWindows.of_time_difference_and_grace(difference / 1000, grace / 1000)
    grouped = app.stream(topic).group_by_key().windowed_by(windows)
    options: dict[str, Any] = {"name": "topic-Canonized", "emit": emit, "close_idle_after": None}
    if "Reduce" in method:
        table = grouped.reduce(lambda a, b: f"{a}+{b}", **options)  # MockReducer.STRING_ADDER
    else:
        table = grouped.aggregate(string_init, tostring_adder, **options)
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for value, ts in inputs:
            driver.pipe(topic, "A", value, timestamp_ms=ts)
        gathered: Gathered = {}
        for r in driver.read_records(out):
            gathered.setdefault(r.key[1], set()).add((r.value, r.timestamp))
    assert gathered == (updates if emit == "update" else finals)


@pytest.mark.parametrize("emit", ["update", "final"])
def test_KStreamSlidingWindowAggregateTest_shouldLogAndMeterWhenSkippingExpiredWindowByGrace(
    emit: str,
) -> None:
    """ofTimeDifferenceAndGrace(10 ms, 90 ms): at stream time 200 every window of the
    records at 100..105 and 15 has expired (at 110 or before); the seven are dropped:
    counted as late, and written to the late topic."""
    app = sk.App("sliding-expired")
    topic, late_topic = string_topics(app, "topic", "late")
    out = app.topic("output", key_type=Any, value_type=str)
    windows = sk.SlidingWindows.of_time_difference_and_grace(0.010, 0.090)
    grouped = app.stream(topic).group_by_key().windowed_by(windows)
    options: dict[str, Any] = {"emit": emit, "late_topic": late_topic, "close_idle_after": None}
    grouped.aggregate(string_init, tostring_adder, **options).to_stream().to(out)
    inputs = [("100", 200), *[(str(i), 100 + i) for i in range(6)], ("6", 15)]
    with TopologyTestDriver(app) as driver:
        for value, ts in [*inputs, ("101", 300), ("102", 400)]:
            driver.pipe(topic, "k", value, timestamp_ms=ts)
        got = [(W(*key), value, ts) for key, value, ts in records(driver, out)]
        assert records(driver, late_topic) == [("k", v, ts) for v, ts in inputs[1:]]
    expected = [(W("k", 190, 200), "0+100", 200), (W("k", 290, 300), "0+101", 300)]
    if emit == "update":
        expected.append((W("k", 390, 400), "0+102", 400))
    assert got == expected
    late = app.metrics.value("dropped_records", node="KSTREAM-AGGREGATE-0000000001", reason="late")
    assert late == 7


LARGE_INPUT = [("A", "1", 10), ("A", "2", 20), ("A", "3", 22), ("A", "4", 15)]
LARGE_INPUT += [("B", "1", 12), ("B", "2", 13), ("B", "3", 18), ("B", "4", 19), ("B", "5", 25)]
LARGE_INPUT += [("B", "6", 14), ("C", "1", 11), ("C", "2", 15), ("C", "3", 16), ("C", "4", 21)]
LARGE_INPUT += [("C", "5", 23), ("D", "4", 11), ("D", "2", 12), ("D", "3", 29), ("D", "5", 16)]
# Each window's results (start, value, timestamp) in the order they came, key by key.
# fmt: off
LARGE_UPDATES: dict[str, list[tuple[int, str, int]]] = {
    "A": [(0, "0+1", 10), (5, "0+1+4", 15), (10, "0+1+2", 20), (10, "0+1+2+4", 20),
         (11, "0+2", 20), (11, "0+2+4", 20), (12, "0+2+3", 22), (12, "0+2+3+4", 22),
         (16, "0+2+3", 22), (21, "0+3", 22)],
    "B": [(2, "0+1", 12), (3, "0+1+2", 13), (4, "0+1+2+6", 14), (8, "0+1+2+3", 18),
         (8, "0+1+2+3+6", 18), (9, "0+1+2+3+4", 19), (9, "0+1+2+3+4+6", 19), (13, "0+2", 13),
         (13, "0+2+3", 18), (13, "0+2+3+4", 19), (13, "0+2+3+4+6", 19), (14, "0+3", 18),
         (14, "0+3+4", 19), (14, "0+3+4+6", 19), (15, "0+3+4+5", 25), (19, "0+4", 19),
         (19, "0+4+5", 25), (20, "0+5", 25)],
    "C": [(1, "0+1", 11), (5, "0+1+2", 15), (6, "0+1+2+3", 16), (11, "0+1+2+3+4", 21),
         (12, "0+2", 15), (12, "0+2+3", 16), (12, "0+2+3+4", 21), (13, "0+2+3+4+5", 23),
         (16, "0+3", 16), (16, "0+3+4", 21), (16, "0+3+4+5", 23), (17, "0+4", 21),
         (17, "0+4+5", 23), (22, "0+5", 23)],
    "D": [(1, "0+4", 11), (2, "0+4+2", 12), (6, "0+4+2+5", 16), (12, "0+2", 12),
         (12, "0+2+5", 16), (13, "0+5", 16), (19, "0+3", 29)],
}
# fmt: on
LARGE_FINAL: dict[str, list[tuple[int, str, int]]] = {
    "A": [(0, "0+1", 10), (5, "0+1+4", 15)],
    "B": [(2, "0+1", 12), (3, "0+1+2", 13), (8, "0+1+2+3+6", 18)],
    "C": [(5, "0+2", 15), (6, "0+2+3", 16)],
}


@pytest.mark.parametrize("emit", ["update", "final"])
def test_KStreamSlidingWindowAggregateTest_testAggregateLargeInput(emit: str) -> None:
    """ofTimeDifferenceAndGrace(10 ms, 50 ms), or 10 ms of grace with emit-final (which
    then skips B@14, C@11, D@11, D@12 and D@16 for some or all of their windows).
    Kafka sorts the results by key and window start, keeping their order otherwise."""
    app = sk.App("sliding-large")
    (topic,) = string_topics(app, "topic1")
    out = app.topic("out", key_type=Any, value_type=str)
    grace = 0.010 if emit == "final" else 0.050
    windows = sk.SlidingWindows.of_time_difference_and_grace(0.010, grace)
    grouped = app.stream(topic).group_by_key().windowed_by(windows)
    grouped.aggregate(string_init, tostring_adder, emit=emit, close_idle_after=None).to_stream().to(
        out
    )
    with TopologyTestDriver(app) as driver:
        for key, value, ts in LARGE_INPUT:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        got = [(W(*key), value, ts) for key, value, ts in records(driver, out)]
    got.sort(key=lambda r: (r[0].key, r[0].start_ms))
    expected = LARGE_FINAL if emit == "final" else LARGE_UPDATES
    assert got == [
        (W(key, start, start + 10), value, ts)
        for key, rows in expected.items()
        for start, value, ts in rows
    ]


# testJoin's steps (update mode, 100 ms of grace): (topic, records), then what table 1,
# table 2 and their join emit, as (key, start, value, timestamp). Kafka's emit-final
# variant is not ported: Kafka closes a window aggregation's windows by the records
# that aggregation saw, streamkit by its task's stream time (both aggregations share
# the join's task), so table 2's windows at 10 and 12 are closed by table 1's records
# at 19 before they open.
JoinRows = list[tuple[str, int, str, int]]
# fmt: off
JOIN_STEPS: list[tuple[str, list[tuple[str, str, int]], tuple[JoinRows, JoinRows, JoinRows]]] = [
    ("topic1", [("A", "1", 10), ("B", "2", 11), ("C", "3", 12)],
     ([("A", 0, "0+1", 10), ("B", 1, "0+2", 11), ("C", 2, "0+3", 12)], [], [])),
    ("topic1", [("A", "1", 15), ("B", "2", 16), ("C", "3", 19)],
     ([("A", 11, "0+1", 15), ("A", 5, "0+1+1", 15), ("B", 12, "0+2", 16),
       ("B", 6, "0+2+2", 16), ("C", 13, "0+3", 19), ("C", 9, "0+3+3", 19)], [], [])),
    ("topic2", [("A", "a", 10), ("C", "c", 12)],
     ([], [("A", 0, "0+a", 10), ("C", 2, "0+c", 12)],
      [("A", 0, "0+1%0+a", 10), ("C", 2, "0+3%0+c", 12)])),
    ("topic2", [("A", "a", 15), ("B", "b", 16), ("C", "c", 17)],
     ([], [("A", 11, "0+a", 15), ("A", 5, "0+a+a", 15), ("B", 6, "0+b", 16),
           ("C", 13, "0+c", 17), ("C", 7, "0+c+c", 17)],
      [("A", 11, "0+1%0+a", 15), ("A", 5, "0+1+1%0+a+a", 15), ("B", 6, "0+2+2%0+b", 16),
       ("C", 13, "0+3%0+c", 19)])),
]
# fmt: on


def test_KStreamSlidingWindowAggregateTest_testJoin() -> None:
    """Two sliding aggregates (10 ms, grace 100 ms) joined as tables with `p1%p2`: the
    join follows each side's results."""
    app = sk.App("sliding-join")
    topics = dict(zip(("topic1", "topic2"), string_topics(app, "topic1", "topic2"), strict=True))
    outs = [app.topic(n, key_type=Any, value_type=str) for n in ("out1", "out2", "joined")]
    windows = sk.SlidingWindows.of_time_difference_and_grace(0.010, 0.100)
    table1, table2 = (
        app.stream(topic)
        .group_by_key()
        .windowed_by(windows)
        .aggregate(string_init, tostring_adder, close_idle_after=None)
        for topic in topics.values()
    )
    table1.to_stream().to(outs[0])
    table2.to_stream().to(outs[1])
    table1.join(table2, lambda p1, p2: f"{p1}%{p2}").to_stream().to(outs[2])
    with TopologyTestDriver(app) as driver:
        for number, (topic, inputs, expected) in enumerate(JOIN_STEPS):
            for key, value, ts in inputs:
                driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            for out, rows in zip(outs, expected, strict=True):
                want = [(W(k, start, start + 10), value, ts) for k, start, value, ts in rows]
                got = [(W(*key), value, ts) for key, value, ts in records(driver, out)]
                assert got == want, (number, out.name)


# KStreamSlidingWindowAggregateTest's large early and no-grace inputs (key E): (time
# difference, grace with updates, grace with emit-final, the values and timestamps,
# then (start, value, timestamp) per result, sorted by window start as Kafka sorts them).
# fmt: off
E_EARLY = [("1", 0), ("3", 5), ("4", 6), ("2", 3), ("6", 13), ("5", 10), ("7", 4), ("8", 2)]
E_EARLY.append(("9", 15))
Rows = list[tuple[int, str, int]]
LARGE_E_CASES: dict[str, tuple[int, int, int, list[tuple[str, int]], Rows, Rows]] = {
    "testEarlyRecordsLargeInput": (10, 50, 1,
        E_EARLY,
        [(0, "0+1", 0), (0, "0+1+3", 5), (0, "0+1+3+4", 6), (0, "0+1+3+4+2", 6),
         (0, "0+1+3+4+2+5", 10), (0, "0+1+3+4+2+5+7", 10), (0, "0+1+3+4+2+5+7+8", 10),
         (1, "0+3", 5), (1, "0+3+4", 6), (1, "0+3+4+2", 6), (1, "0+3+4+2+5", 10),
         (1, "0+3+4+2+5+7", 10), (1, "0+3+4+2+5+7+8", 10), (3, "0+3+4+2+6", 13),
         (3, "0+3+4+2+6+5", 13), (3, "0+3+4+2+6+5+7", 13), (4, "0+3+4", 6), (4, "0+3+4+6", 13),
         (4, "0+3+4+6+5", 13), (4, "0+3+4+6+5+7", 13), (5, "0+3+4+6+5", 13),
         (5, "0+3+4+6+5+9", 15), (6, "0+4", 6), (6, "0+4+6", 13), (6, "0+4+6+5", 13),
         (6, "0+4+6+5+9", 15), (7, "0+6", 13), (7, "0+6+5", 13), (7, "0+6+5+9", 15),
         (11, "0+6", 13), (11, "0+6+9", 15), (14, "0+9", 15)],
        [(0, "0+1+3+4+2", 6), (1, "0+3+4+2", 6), (3, "0+3+4+2+6+5+7", 13)]),
    "testEarlyNoGracePeriodLargeInput": (10, 0, 0,
        E_EARLY,
        [(0, "0+1", 0), (0, "0+1+3", 5), (0, "0+1+3+4", 6), (0, "0+1+3+4+2", 6), (1, "0+3", 5),
         (1, "0+3+4", 6), (1, "0+3+4+2", 6), (3, "0+3+4+2+6", 13), (3, "0+3+4+2+6+5", 13),
         (3, "0+3+4+2+6+5+7", 13), (4, "0+3+4", 6), (4, "0+3+4+6", 13), (4, "0+3+4+6+5", 13),
         (4, "0+3+4+6+5+7", 13), (5, "0+3+4+6+5", 13), (5, "0+3+4+6+5+9", 15), (6, "0+4", 6),
         (6, "0+4+6", 13), (6, "0+4+6+5", 13), (6, "0+4+6+5+9", 15), (7, "0+6", 13),
         (7, "0+6+5", 13), (7, "0+6+5+9", 15), (11, "0+6", 13), (11, "0+6+9", 15),
         (14, "0+9", 15)],
        [(0, "0+1+3+4+2", 6), (1, "0+3+4+2", 6), (3, "0+3+4+2+6+5+7", 13),
         (4, "0+3+4+6+5+7", 13)]),
    "testNoGracePeriodLargeInput": (10, 0, 0,
        [(value, ts + 100) for value, ts in E_EARLY],
        [(90, "0+1", 100), (95, "0+1+3", 105), (96, "0+1+3+4", 106), (96, "0+1+3+4+2", 106),
         (101, "0+3", 105), (101, "0+3+4", 106), (101, "0+3+4+2", 106), (103, "0+3+4+2+6", 113),
         (103, "0+3+4+2+6+5", 113), (103, "0+3+4+2+6+5+7", 113), (104, "0+3+4", 106),
         (104, "0+3+4+6", 113), (104, "0+3+4+6+5", 113), (104, "0+3+4+6+5+7", 113),
         (105, "0+3+4+6+5", 113), (105, "0+3+4+6+5+9", 115), (106, "0+4", 106),
         (106, "0+4+6", 113), (106, "0+4+6+5", 113), (106, "0+4+6+5+9", 115), (107, "0+6", 113),
         (107, "0+6+5", 113), (107, "0+6+5+9", 115), (111, "0+6", 113), (111, "0+6+9", 115),
         (114, "0+9", 115)],
        [(90, "0+1", 100), (95, "0+1+3", 105), (96, "0+1+3+4+2", 106), (101, "0+3+4+2", 106),
         (103, "0+3+4+2+6+5+7", 113), (104, "0+3+4+6+5+7", 113)]),
}
# fmt: on


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("method", LARGE_E_CASES)
def test_KStreamSlidingWindowAggregateTest_large_inputs(method: str, emit: str) -> None:
    difference, grace_update, grace_final, inputs, updates, finals = LARGE_E_CASES[method]
    grace = grace_update if emit == "update" else grace_final
    app = sk.App("sliding-large-e")
    (topic,) = string_topics(app, "topic")
    out = app.topic("out", key_type=Any, value_type=str)
    windows = sk.SlidingWindows.of_time_difference_and_grace(difference / 1000, grace / 1000)
    grouped = app.stream(topic).group_by_key().windowed_by(windows)
    grouped.aggregate(string_init, tostring_adder, emit=emit, close_idle_after=None).to_stream().to(
        out
    )
    with TopologyTestDriver(app) as driver:
        for value, ts in inputs:
            driver.pipe(topic, "E", value, timestamp_ms=ts)
        got = [(key[1], value, ts) for key, value, ts in records(driver, out)]
    got.sort(key=lambda r: r[0])
    assert got == (updates if emit == "update" else finals)
