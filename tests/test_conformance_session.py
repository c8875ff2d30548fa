"""Kafka Streams conformance: session windows.

Ported from org.apache.kafka.streams.kstream.internals.
KStreamSessionWindowAggregateProcessorTest (the cases without a record cache, those
that check the store, and the emit-final ones, which use no cache) and
SuppressScenarioTest.shouldSupportFinalResultsForSessionWindows.
A record that falls in existing sessions retracts them (None, at their end) before
the merged session's result. (SuppressScenarioTest.shouldSupportFinalResultsForSessionWindows
is with the other final-results cases in test_conformance_suppress.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

GAP_MS = 5 * 60 * 1000
W = sk.Windowed


def _sessions(
    gap_ms: int = GAP_MS, grace_ms: int = 0, emit: str = "update"
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """The processor test's aggregator: a count, with sessions merged by adding."""
    app = sk.App("sessions")
    topic = app.topic("topic", key_type=str, value_type=str)
    out = app.topic("out", key_type=Any, value_type=Any)
    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SessionWindows.of_inactivity_gap_and_grace(gap_ms / 1000, grace_ms / 1000))
        .aggregate(
            lambda: 0,
            lambda _k, _v, agg: agg + 1,
            merger=lambda _k, a, b: a + b,
            name="session-store",
            emit=emit,
            close_idle_after=None,
        )
        .to_stream()
        .to(out)
    )
    return app, topic, out


def _results(driver: TopologyTestDriver, out: sk.Topic) -> list[tuple[Any, Any, int]]:
    return [(W(*key), value, ts) for key, value, ts in records(driver, out)]


# Store checks: (key, timestamp) piped, then the store's sessions (None: not checked).
STORE_CASES: dict[str, list[tuple[tuple[str, int], dict[Any, int] | None]]] = {
    "shouldCreateSingleSessionWhenWithinGap": [
        (("john", 0), None),
        (("john", 500), {W("john", 0, 500): 2}),
    ],
    "shouldMergeSessions": [
        (("mel", 0), None),
        (("mel", GAP_MS + 1), {W("mel", 0, 0): 1, W("mel", GAP_MS + 1, GAP_MS + 1): 1}),
        (("mel", GAP_MS // 2), {W("mel", 0, GAP_MS + 1): 3}),
    ],
    "shouldUpdateSessionIfTheSameTime": [(("mel", 0), None), (("mel", 0), {W("mel", 0, 0): 2})],
    "shouldRemoveMergedSessionsFromStateStore": [
        (("a", 0), {W("a", 0, 0): 1}),
        (("a", 100), {W("a", 0, 100): 2}),
    ],
}


@pytest.mark.parametrize("method", STORE_CASES)
def test_KStreamSessionWindowAggregateProcessorTest_store(method: str) -> None:
    """KStreamSessionWindowAggregateProcessorTest.<method>: the sessions in the store."""
    app, topic, _ = _sessions()
    with TopologyTestDriver(app) as driver:
        for (key, ts), expected in STORE_CASES[method]:
            driver.pipe(topic, key, "v", timestamp_ms=ts)
            if expected is not None:
                assert driver.store("session-store") == expected


# Output checks without a record cache: (gap, (key, timestamp) piped, records out).
FORWARD_CASES: dict[str, tuple[int, list[tuple[str, int]], list[tuple[Any, Any, int]]]] = {
    "shouldImmediatelyForwardNewSessionWhenNonCachedStore": (
        GAP_MS,
        [("a", 0), ("b", 0), ("c", 0)],
        [(W("a", 0, 0), 1, 0), (W("b", 0, 0), 1, 0), (W("c", 0, 0), 1, 0)],
    ),
    "shouldImmediatelyForwardRemovedSessionsWhenMerging": (
        GAP_MS,
        [("a", 0), ("a", 5)],
        [(W("a", 0, 0), 1, 0), (W("a", 0, 0), None, 0), (W("a", 0, 5), 2, 5)],
    ),
    # ofInactivityGapAndGrace(10 ms, 0): at stream time 11, Late1 at 0 is dropped (its
    # session [0, 0] expired at 1).
    "shouldLogAndMeterWhenSkippingLateRecordWithZeroGrace": (
        10,
        [("dummy", 0), ("OnTime1", 0), ("dummy", 11), ("Late1", 0)],
        [(W("dummy", 0, 0), 1, 0), (W("OnTime1", 0, 0), 1, 0), (W("dummy", 11, 11), 1, 11)],
    ),
}


@pytest.mark.parametrize("method", FORWARD_CASES)
def test_KStreamSessionWindowAggregateProcessorTest_forward(method: str) -> None:
    """KStreamSessionWindowAggregateProcessorTest.<method>: the records forwarded."""
    gap_ms, inputs, expected = FORWARD_CASES[method]
    app, topic, out = _sessions(gap_ms)
    with TopologyTestDriver(app) as driver:
        for key, ts in inputs:
            driver.pipe(topic, key, "1", timestamp_ms=ts)
        assert _results(driver, out) == expected
    late = app.metrics.value("dropped_records", node="KSTREAM-AGGREGATE-0000000001", reason="late")
    assert late == (1 if "Late" in method else 0)


def test_KStreamSessionWindowAggregateProcessorTest_skipping_late_record_with_nonzero_grace() -> (
    None
):
    """shouldLogAndMeterWhenSkippingLateRecordWithNonzeroGrace: ofInactivityGapAndGrace
    (10 ms, 1 ms): at stream time 11, OnTime2 at 0 is within the grace of its session's
    end; at 12, Late1 at 0 is dropped (expired at 1)."""
    app, topic, out = _sessions(10, grace_ms=1)
    inputs = [("dummy", 0), ("OnTime1", 0), ("dummy", 11), ("OnTime2", 0), ("dummy", 12)]
    with TopologyTestDriver(app) as driver:
        for key, ts in [*inputs, ("Late1", 0)]:
            driver.pipe(topic, key, "1", timestamp_ms=ts)
        assert _results(driver, out) == [
            (W("dummy", 0, 0), 1, 0),
            (W("OnTime1", 0, 0), 1, 0),
            (W("dummy", 11, 11), 1, 11),
            (W("OnTime2", 0, 0), 1, 0),
            (W("dummy", 11, 11), None, 11),
            (W("dummy", 11, 12), 2, 12),
        ]
    late = app.metrics.value("dropped_records", node="KSTREAM-AGGREGATE-0000000001", reason="late")
    assert late == 1


# Emit-final (EmitStrategy ON_WINDOW_CLOSE) cases: no record cache, so Kafka's
# expectations hold as they are: each closed session once, in the order they close.
G = GAP_MS
FINAL_CASES: dict[str, tuple[list[tuple[str, int]], list[tuple[Any, Any, int]]]] = {
    "shouldHaveMultipleSessionsForSameIdWhenTimestampApartBySessionGap": (
        [("mel", 0), ("mel", G + 1), ("mel", G + 1), *[("mel", 2 * G + 2)] * 3],
        [(W("mel", 0, 0), 1, 0), (W("mel", G + 1, G + 1), 2, G + 1)],
    ),
    "shouldHandleMultipleSessionsAndMerging": (
        [
            *[("a", 0), ("b", 0), ("c", 0), ("d", 0), ("d", G // 2), ("a", G + 1), ("b", G + 1)],
            *[("a", G + 1 + G // 2), ("c", G + 1 + G // 2)],
        ],
        [
            (W("a", 0, 0), 1, 0),
            (W("b", 0, 0), 1, 0),
            (W("c", 0, 0), 1, 0),
            (W("d", 0, G // 2), 2, G // 2),
        ],
    ),
    "shouldImmediatelyForwardRemovedSessionsWhenMerging": ([("a", 0), ("a", 5)], []),
}


@pytest.mark.parametrize("method", FINAL_CASES)
def test_KStreamSessionWindowAggregateProcessorTest_emit_final(method: str) -> None:
    inputs, expected = FINAL_CASES[method]
    app, topic, out = _sessions(emit="final")
    with TopologyTestDriver(app) as driver:
        for key, ts in inputs:
            driver.pipe(topic, key, "1", timestamp_ms=ts)
        assert _results(driver, out) == expected


@pytest.mark.parametrize("emit", ["update", "final"])
def test_KStreamSessionWindowAggregateProcessorTest_shouldGetAggregatedValuesFromValueGetter(
    emit: str,
) -> None:
    """Kafka reads the sessions through the aggregation's value getter; here, its store."""
    app, topic, _ = _sessions(emit=emit)
    with TopologyTestDriver(app) as driver:
        for ts in (0, G + 1, G + 1):
            driver.pipe(topic, "a", "1", timestamp_ms=ts)
        store = driver.store("session-store")
    assert store[W("a", 0, 0)] == 1
    assert store[W("a", G + 1, G + 1)] == 2


# SessionWindowedKStreamImplTest: ofInactivityGapWithNoGrace(500 ms), processData's
# five records; outputs on every update, and on window close (emit="final").
IMPL_INPUT = [("1", "1", 10), ("1", "2", 15), ("1", "3", 600), ("2", "1", 600), ("2", "2", 599)]
IMPL_CASES: dict[str, tuple[list[Any], Any]] = {
    "shouldCountSessionWindowedWithCachingDisabled": ([1, 2, 1, 1, 2], 2),
    "shouldReduceWindowed": (["1", "1+2", "3", "1", "1+2"], "1+2"),
    "shouldAggregateSessionWindowed": (["0+1", "0+0+1+2", "0+3", "0+1", "0+0+1+2"], "0+0+1+2"),
}


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("method", IMPL_CASES)
def test_SessionWindowedKStreamImplTest(method: str, emit: str) -> None:
    """SessionWindowedKStreamImplTest.<method> for EmitStrategy onWindowUpdate / onWindowClose;
    with updates, shouldMaterialize{Count,Reduced,Aggregated}'s store check too."""
    app = sk.App("session-windowed-impl")
    topic = app.topic("input", key_type=str, value_type=str)
    out = app.topic("out", key_type=Any, value_type=Any)
    windowed = (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SessionWindows.of_inactivity_gap_with_no_grace(0.5))
    )
    options: dict[str, Any] = {"name": "store", "emit": emit, "close_idle_after": None}
    if method.startswith("shouldCount"):
        table = windowed.count(**options)
    elif method.startswith("shouldReduce"):
        table = windowed.reduce(lambda a, b: f"{a}+{b}", **options)
    else:
        table = windowed.aggregate(
            lambda: "0",
            lambda _k, v, agg: f"{agg}+{v}",
            merger=lambda _k, a, b: f"{a}+{b}",
            **options,
        )
    table.to_stream().to(out)
    first, merged, third, fourth, last = IMPL_CASES[method][0]
    with TopologyTestDriver(app) as driver:
        for key, value, ts in IMPL_INPUT:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        got = _results(driver, out)
        if emit == "final":
            assert got == [(W("1", 10, 15), IMPL_CASES[method][1], 15)]
            return
        assert got == [
            (W("1", 10, 10), first, 10),
            (W("1", 10, 10), None, 10),
            (W("1", 10, 15), merged, 15),
            (W("1", 600, 600), third, 600),
            (W("2", 600, 600), fourth, 600),
            (W("2", 600, 600), None, 600),
            (W("2", 599, 600), last, 600),
        ]
        assert driver.store("store") == {
            W("1", 10, 15): merged,
            W("1", 600, 600): third,
            W("2", 599, 600): last,
        }
