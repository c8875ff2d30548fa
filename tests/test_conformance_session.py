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


def test_shouldCreateSingleSessionWhenWithinGap() -> None:
    """KStreamSessionWindowAggregateProcessorTest.shouldCreateSingleSessionWhenWithinGap"""
    app, topic, _ = _sessions()
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "john", "first", timestamp_ms=0)
        driver.pipe(topic, "john", "second", timestamp_ms=500)
        assert driver.store("session-store") == {W("john", 0, 500): 2}


def test_shouldMergeSessions() -> None:
    """KStreamSessionWindowAggregateProcessorTest.shouldMergeSessions"""
    app, topic, _ = _sessions()
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "mel", "first", timestamp_ms=0)
        driver.pipe(topic, "mel", "second", timestamp_ms=GAP_MS + 1)
        assert driver.store("session-store") == {
            W("mel", 0, 0): 1,
            W("mel", GAP_MS + 1, GAP_MS + 1): 1,
        }
        driver.pipe(topic, "mel", "third", timestamp_ms=GAP_MS // 2)
        assert driver.store("session-store") == {W("mel", 0, GAP_MS + 1): 3}


def test_shouldUpdateSessionIfTheSameTime() -> None:
    """KStreamSessionWindowAggregateProcessorTest.shouldUpdateSessionIfTheSameTime"""
    app, topic, _ = _sessions()
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "mel", "first", timestamp_ms=0)
        driver.pipe(topic, "mel", "second", timestamp_ms=0)
        assert driver.store("session-store") == {W("mel", 0, 0): 2}


def test_shouldRemoveMergedSessionsFromStateStore() -> None:
    """KStreamSessionWindowAggregateProcessorTest.shouldRemoveMergedSessionsFromStateStore"""
    app, topic, _ = _sessions()
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "a", "1", timestamp_ms=0)
        assert driver.store("session-store") == {W("a", 0, 0): 1}
        driver.pipe(topic, "a", "2", timestamp_ms=100)
        assert driver.store("session-store") == {W("a", 0, 100): 2}


def test_KStreamSessionWindowAggregateProcessorTest_shouldImmediatelyForwardNewSessionWhenNonCachedStore() -> (  # noqa: E501
    None
):
    app, topic, out = _sessions()
    with TopologyTestDriver(app) as driver:
        for key in "abc":
            driver.pipe(topic, key, "1", timestamp_ms=0)
        assert _results(driver, out) == [(W(k, 0, 0), 1, 0) for k in "abc"]


def test_KStreamSessionWindowAggregateProcessorTest_shouldImmediatelyForwardRemovedSessionsWhenMerging() -> (  # noqa: E501
    None
):
    app, topic, out = _sessions()
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "a", "1", timestamp_ms=0)
        driver.pipe(topic, "a", "1", timestamp_ms=5)
        assert _results(driver, out) == [
            (W("a", 0, 0), 1, 0),
            (W("a", 0, 0), None, 0),
            (W("a", 0, 5), 2, 5),
        ]


def test_shouldLogAndMeterWhenSkippingLateRecordWithZeroGrace() -> None:
    """KStreamSessionWindowAggregateProcessorTest.shouldLogAndMeterWhenSkippingLateRecordWithZeroGrace:
    SessionWindows.ofInactivityGapAndGrace(10 ms, 0): at stream time 11 a record at 0 is
    late (its session [0, 0] expired at 1)."""
    app, topic, out = _sessions(gap_ms=10)
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, "dummy", "dummy", timestamp_ms=0)
        driver.pipe(topic, "OnTime1", "1", timestamp_ms=0)
        driver.pipe(topic, "dummy", "dummy", timestamp_ms=11)
        driver.pipe(topic, "Late1", "1", timestamp_ms=0)
        assert _results(driver, out) == [
            (W("dummy", 0, 0), 1, 0),
            (W("OnTime1", 0, 0), 1, 0),
            (W("dummy", 11, 11), 1, 11),
        ]
    late = app.metrics.value("dropped_records", node="KSTREAM-AGGREGATE-0000000001", reason="late")
    assert late == 1


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
