"""Kafka Streams conformance: KTable.suppress.

Ported from org.apache.kafka.streams.kstream.internals.SuppressScenarioTest. The
raw table's updates and the suppressed table's are both checked, as Kafka does.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

Row = tuple[str, Any, int]


def _value_counts(suppressed: sk.Suppressed) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    """The scenario's table: a count of the input table's rows per value."""
    app = sk.App("suppress-scenario")
    source = app.topic("input", key_type=str, value_type=str)
    raw, out = (app.topic(n, key_type=str, value_type=int) for n in ("raw", "suppressed"))
    counts = app.ktable(source).group_by(lambda k, v: (v, k), key_type=str).count()
    counts.suppress(suppressed).to_stream().to(out)
    counts.to_stream().to(raw)
    return app, source, raw, out


def _check(
    suppressed: sk.Suppressed, steps: list[tuple[list[tuple[str, str, int]], list[Row], list[Row]]]
) -> None:
    """Each step: the inputs, then the raw and the suppressed records they produce."""
    app, source, raw, out = _value_counts(suppressed)
    with TopologyTestDriver(app) as driver:
        for number, (inputs, raw_expected, suppressed_expected) in enumerate(steps):
            for key, value, ts in inputs:
                driver.pipe(source, key, value, timestamp_ms=ts)
            assert records(driver, raw) == raw_expected, f"step {number}"
            assert records(driver, out) == suppressed_expected, f"step {number}"


FIRST = [("k1", "v1", 0), ("k1", "v2", 1), ("k2", "v1", 2)]
FIRST_RAW: list[Row] = [("v1", 1, 0), ("v1", 0, 1), ("v2", 1, 1), ("v1", 1, 2)]


def test_SuppressScenarioTest_shouldImmediatelyEmitEventsWithZeroEmitAfter() -> None:
    _check(
        sk.Suppressed.until_time_limit(0, sk.BufferConfig.unbounded()),
        [
            (FIRST, FIRST_RAW, FIRST_RAW),
            ([("x", "x", 3)], [("x", 1, 3)], [("x", 1, 3)]),
            ([("x", "y", 4)], [("x", 0, 4), ("y", 1, 4)], [("x", 0, 4), ("y", 1, 4)]),
        ],
    )


def test_SuppressScenarioTest_shouldSuppressIntermediateEventsWithTimeLimit() -> None:
    _check(
        sk.Suppressed.until_time_limit(0.002, sk.BufferConfig.unbounded()),
        [
            (FIRST, FIRST_RAW, [("v1", 1, 2)]),
            ([("tick", "tick", 3)], [("tick", 1, 3)], [("v2", 1, 1)]),
            ([("tick", "tock", 4)], [("tick", 0, 4), ("tock", 1, 4)], []),
        ],
    )


@pytest.mark.parametrize(
    "buffer",
    [sk.BufferConfig.max_records(1), sk.BufferConfig.max_bytes(200)],
    ids=["RecordLimit", "BytesLimit"],
)
def test_SuppressScenarioTest_shouldSuppressIntermediateEventsWith(buffer: sk.BufferConfig) -> None:
    """...WithRecordLimit: max_records(1); ...WithBytesLimit: max_bytes(200), which Kafka's
    test chose knowing an entry is a little over 100 bytes; both emit early when full."""
    _check(
        sk.Suppressed.until_time_limit(2**62 / 1000, buffer.emit_early_when_full()),
        [
            (FIRST, FIRST_RAW, [("v1", 0, 1), ("v2", 1, 1)]),
            ([("x", "x", 3)], [("x", 1, 3)], [("v1", 1, 2)]),
        ],
    )


def test_suppress_shut_down_when_full_stops_the_task() -> None:
    """Not a port: Kafka's shutDownWhenFull, on the scenario's input. A buffer over its
    bound stops the task rather than emit a result early."""
    app, source, _, _ = _value_counts(
        sk.Suppressed.until_time_limit(
            2**62 / 1000, sk.BufferConfig.max_records(1).shut_down_when_full()
        )
    )
    with TopologyTestDriver(app) as driver, pytest.raises(sk.StreamkitError, match="suppress"):
        for key, value, ts in FIRST:
            driver.pipe(source, key, value, timestamp_ms=ts)


def _kafka_string(window: sk.Windowed, value: Any) -> tuple[str, Any]:
    return f"[{window.key}@{window.start_ms}/{window.end_ms}]", value


def test_SuppressScenarioTest_shouldWorkBeforeGroupBy() -> None:
    app = sk.App("suppress-before-group-by")
    source = app.topic("topic", key_type=str, value_type=str)
    out = app.topic("output", key_type=str, value_type=int)
    (
        app.ktable(source)
        .suppress(sk.Suppressed.until_time_limit(0.010, sk.BufferConfig.unbounded()))
        .group_by(lambda k, v: (k, v), key_type=str)
        .count()
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "A", "a", timestamp_ms=0)
        driver.pipe(source, "tick", "tick", timestamp_ms=10)
        assert records(driver, out) == [("A", 1, 0)]


def _before_join(suppress_left: bool) -> None:
    """shouldWorkBeforeJoinRight / shouldWorkBeforeJoinLeft: one side suppressed 10 ms; a
    lookup into it sees what it emitted, not what it holds."""
    app = sk.App("suppress-before-join")
    left_topic, right_topic = (
        app.topic(n, key_type=str, value_type=str) for n in ("left", "right")
    )
    out = app.topic("output", key_type=str, value_type=str)
    left, right = app.ktable(left_topic), app.ktable(right_topic)
    wait = sk.Suppressed.until_time_limit(0.010, sk.BufferConfig.unbounded())
    if suppress_left:
        left = left.suppress(wait)
    else:
        right = right.suppress(wait)

    def show(a: Any) -> str:
        return "null" if a is None else str(a)

    left.outer_join(right, lambda lv, rv: f"({show(lv)},{show(rv)})").to_stream().to(out)
    held, other = (left_topic, right_topic) if suppress_left else (right_topic, left_topic)

    def pair(mine: str, theirs: str) -> str:
        return f"({mine},{theirs})" if suppress_left else f"({theirs},{mine})"

    with TopologyTestDriver(app) as driver:

        def step(topic: sk.Topic, key: str, value: str, ts: int) -> list[Row]:
            driver.pipe(topic, key, value, timestamp_ms=ts)
            return records(driver, out)

        assert step(held, "B", "1", 0) == []
        assert step(held, "A", "1", 0) == []
        assert step(held, "tick", "tick", 10) == [
            ("A", pair("1", "null"), 0),
            ("B", pair("1", "null"), 0),
        ]
        assert step(held, "A", "2", 11) == []
        assert step(other, "A", "a", 12) == [("A", pair("1", "a"), 12)]
        assert step(other, "B", "b", 12) == [("B", pair("1", "b"), 12)]
        assert step(other, "A", "b", 13) == [("A", pair("1", "b"), 13)]
        assert step(held, "tick", "tick1", 21) == [
            ("tick", pair("tick1", "null"), 21),
            ("A", pair("2", "b"), 13),
        ]


def test_SuppressScenarioTest_shouldWorkBeforeJoinRight() -> None:
    _before_join(suppress_left=False)


def test_SuppressScenarioTest_shouldWorkBeforeJoinLeft() -> None:
    _before_join(suppress_left=True)


# Final results of time and sliding windows: (windows, (timestamps piped for k1),
# raw results, suppressed results). Kafka sorts the sliding case's raw results by key
# string, then timestamp; so does the check.
# fmt: off
WINDOW_CASES: dict[str, tuple[Any, list[int], list[Row], list[Row]]] = {
    "shouldSupportFinalResultsForTimeWindows": (
        sk.TimeWindows.of_size_and_grace(0.002, 0.001),
        [0, 1, 2, 1, 0, 5, 0],
        [("[k1@0/2]", 1, 0), ("[k1@0/2]", 2, 1), ("[k1@2/4]", 1, 2), ("[k1@0/2]", 3, 1),
         ("[k1@0/2]", 4, 1), ("[k1@4/6]", 1, 5)],
        [("[k1@0/2]", 4, 1), ("[k1@2/4]", 1, 2)],
    ),
    "shouldSupportFinalResultsForTimeWindowsWithLargeJump": (
        sk.TimeWindows.of_size_and_grace(0.002, 0.002),
        [0, 1, 2, 0, 3, 0, 4, 0, 30],
        [("[k1@0/2]", 1, 0), ("[k1@0/2]", 2, 1), ("[k1@2/4]", 1, 2), ("[k1@0/2]", 3, 1),
         ("[k1@2/4]", 2, 3), ("[k1@0/2]", 4, 1), ("[k1@4/6]", 1, 4), ("[k1@30/32]", 1, 30)],
        [("[k1@0/2]", 4, 1), ("[k1@2/4]", 2, 3), ("[k1@4/6]", 1, 4)],
    ),
    "shouldSupportFinalResultsForSlidingWindows": (
        sk.SlidingWindows.of_time_difference_and_grace(0.005, 0.015),
        [10, 11, 10, 13, 10, 24, 5, 7, 90],
        [("[k1@11/16]", 1, 11), ("[k1@11/16]", 2, 13), ("[k1@12/17]", 1, 13),
         ("[k1@19/24]", 1, 24), ("[k1@5/10]", 1, 10), ("[k1@5/10]", 2, 10),
         ("[k1@5/10]", 3, 10), ("[k1@5/10]", 4, 10), ("[k1@5/10]", 5, 10),
         ("[k1@6/11]", 2, 11), ("[k1@6/11]", 3, 11), ("[k1@6/11]", 4, 11),
         ("[k1@6/11]", 5, 11), ("[k1@8/13]", 4, 13), ("[k1@8/13]", 5, 13),
         ("[k1@85/90]", 1, 90)],
        [("[k1@5/10]", 5, 10), ("[k1@6/11]", 5, 11), ("[k1@8/13]", 5, 13),
         ("[k1@11/16]", 2, 13), ("[k1@12/17]", 1, 13), ("[k1@19/24]", 1, 24)],
    ),
    "shouldSupportFinalResultsForSessionWindows": (
        sk.SessionWindows.of_inactivity_gap_with_no_grace(0.005),
        [0, 5, 1, 11, 5, 30],
        [("[k1@0/0]", 1, 0), ("[k1@0/0]", None, 0), ("[k1@0/5]", 2, 5),
         ("[k1@0/5]", None, 5), ("[k1@0/5]", 3, 5), ("[k2@11/11]", 1, 11),
         ("[k1@30/30]", 1, 30)],
        [("[k1@0/5]", 3, 5), ("[k2@11/11]", 1, 11)],
    ),
}
# fmt: on


@pytest.mark.parametrize("method", WINDOW_CASES)
def test_SuppressScenarioTest_final_results_of_windows(method: str) -> None:
    """SuppressScenarioTest.<method>: suppress(until_window_closes(unbounded())), and the
    same final results from the aggregation's own emit="final"."""
    windows, timestamps, raw_expected, final_expected = WINDOW_CASES[method]
    app = sk.App("suppress-windows")
    source = app.topic("input", key_type=str, value_type=str)
    raw, final, emitted = (
        app.topic(n, key_type=str, value_type=int) for n in ("raw", "suppressed", "final")
    )
    grouped = app.stream(source).group_by(lambda k, v: k, key_type=str).windowed_by(windows)
    counts = grouped.count(name="counts", close_idle_after=None)
    counts.to_stream().map(_kafka_string).to(raw)
    suppressed = counts.suppress(sk.Suppressed.until_window_closes(sk.BufferConfig.unbounded()))
    suppressed.to_stream().map(_kafka_string).to(final)
    finals = grouped.count(name="final-counts", emit="final", close_idle_after=None)
    finals.to_stream().map(_kafka_string).to(emitted)
    with TopologyTestDriver(app) as driver:
        for ts in timestamps:
            # The session case's fourth record is k2's; every other one is k1's.
            key = "k2" if "Session" in method and ts == 11 else "k1"
            driver.pipe(source, key, "v1", timestamp_ms=ts)
        got = records(driver, raw)
        if "Sliding" in method:
            got.sort(key=lambda r: (r[0], r[2]))
        assert got == raw_expected
        assert records(driver, final) == final_expected
        assert records(driver, emitted) == final_expected
