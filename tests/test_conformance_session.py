"""Kafka Streams conformance: session windows.

Ported from org.apache.kafka.streams.kstream.internals.
KStreamSessionWindowAggregateProcessorTest (the cases without a record cache, or
that check the store) and SuppressScenarioTest.shouldSupportFinalResultsForSessionWindows.
A record that falls in existing sessions retracts them (None, at their end) before
the merged session's result; emit-final drops the retractions and emits each
session once it has closed.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

GAP_MS = 5 * 60 * 1000
W = sk.Windowed


def _sessions(gap_ms: int = GAP_MS) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """The processor test's aggregator: a count, with sessions merged by adding."""
    app = sk.App("sessions")
    topic = app.topic("topic", key_type=str, value_type=str)
    out = app.topic("out", key_type=Any, value_type=Any)
    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.SessionWindows(gap_ms / 1000))
        .aggregate(
            lambda: 0,
            lambda _k, _v, agg: agg + 1,
            merger=lambda _k, a, b: a + b,
            name="session-store",
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


def _kafka_string(window: sk.Windowed, count: Any) -> tuple[str, Any]:
    return f"[{window.key}@{window.start_ms}/{window.end_ms}]", count


def test_SuppressScenarioTest_shouldSupportFinalResultsForSessionWindows() -> None:
    """Raw: every update and retraction; final (Kafka's suppress(untilWindowCloses)):
    each session once, when stream time passes its end, the gap and the grace."""
    app = sk.App("final-sessions")
    source = app.topic("input", key_type=str, value_type=str)
    raw, final = (app.topic(n, key_type=str, value_type=Any) for n in ("raw", "suppressed"))
    sessions = (
        app.stream(source)
        .group_by(lambda k, v: k, key_type=str)
        .windowed_by(sk.SessionWindows(0.005))
    )
    sessions.count(name="counts", close_idle_after=None).to_stream().map(_kafka_string).to(raw)
    sessions.count(name="final-counts", emit="final", close_idle_after=None).to_stream().map(
        _kafka_string
    ).to(final)
    with TopologyTestDriver(app) as driver:
        for key, ts in [("k1", 0), ("k1", 5), ("k1", 1), ("k2", 11), ("k1", 5), ("k1", 30)]:
            driver.pipe(source, key, "v1", timestamp_ms=ts)
        assert records(driver, raw) == [
            ("[k1@0/0]", 1, 0),
            ("[k1@0/0]", None, 0),
            ("[k1@0/5]", 2, 5),
            ("[k1@0/5]", None, 5),
            ("[k1@0/5]", 3, 5),
            ("[k2@11/11]", 1, 11),
            ("[k1@30/30]", 1, 30),
        ]
        assert records(driver, final) == [("[k1@0/5]", 3, 5), ("[k2@11/11]", 1, 11)]
