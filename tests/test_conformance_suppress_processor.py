"""Kafka Streams conformance: KTable.suppress, case by case.

Ported from org.apache.kafka.streams.kstream.internals.suppress.KTableSuppressProcessorTest.
Kafka drives the suppress processor alone with hand-made Changes; here the same
keys, values and timestamps reach it through a table (a KTable from a topic, or a
windowed count) and what it forwards is read from the suppressed table's stream.
Kafka's ARBITRARY_LONG is 5; a window key prints as `[key@start/end]`.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

DAYS_100 = 100 * 24 * 3600
HEADERS = (("k", b"v"),)


def _table(suppressed: sk.Suppressed) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """A KTable<String, Long> from topic "in", suppressed, to "out"."""
    app = sk.App("ktable-suppress")
    source = app.topic("in", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    app.ktable(source).suppress(suppressed).to_stream().to(out)
    return app, source, out


def _kafka_string(window: sk.Windowed, value: Any) -> tuple[str, Any]:
    return f"[{window.key}@{window.start_ms}/{window.end_ms}]", value


def _windowed(
    windows: sk.TimeWindows, suppressed: sk.Suppressed
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """A windowed aggregate of the records' values (Kafka's Change<Long> values): the
    latest value of a window, and a "delete" value deletes the window (a tombstone)."""
    app = sk.App("windowed-suppress")
    source = app.topic("in", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=str)

    def latest(_key: str, value: str, _aggregate: str | None) -> str | None:
        return None if value == "delete" else value

    grouped = app.stream(source).group_by_key().windowed_by(windows)
    table = grouped.aggregate(lambda: None, latest, value_type=str, close_idle_after=None)
    table.suppress(suppressed).to_stream().map(_kafka_string).to(out)
    return app, source, out


def test_KTableSuppressProcessorTest_zeroTimeLimitShouldImmediatelyEmit() -> None:
    app, source, out = _table(sk.Suppressed.until_time_limit(0, sk.BufferConfig.unbounded()))
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", 7, timestamp_ms=5)
        assert records(driver, out) == [("hey", 7, 5)]


def test_KTableSuppressProcessorTest_windowedZeroTimeLimitShouldImmediatelyEmit() -> None:
    app, source, out = _windowed(
        sk.TimeWindows.of_size_with_no_grace(0.100),
        sk.Suppressed.until_time_limit(0, sk.BufferConfig.unbounded()),
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", "7", timestamp_ms=5)
        assert records(driver, out) == [("[hey@0/100]", "7", 5)]


def test_KTableSuppressProcessorTest_intermediateSuppressionShouldBufferAndEmitLater() -> None:
    app, source, out = _table(sk.Suppressed.until_time_limit(0.001, sk.BufferConfig.unbounded()))
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", 1, timestamp_ms=0)
        assert records(driver, out) == []
        driver.pipe(source, "tick", 0, timestamp_ms=1)
        assert records(driver, out) == [("hey", 1, 0)]


# Final results: (size and grace in ms, then (key, timestamp) piped, with the records
# out after each).
FINAL_CASES: dict[str, tuple[int, int, list[tuple[str, int, list[Any]]]]] = {
    # Stream time 100: "hey"'s window ended, but its grace has 1 ms to go.
    "finalResultsSuppressionShouldBufferAndEmitAtGraceExpiration": (
        1,
        1,
        [("hey", 99, []), ("dummyKey1", 100, []), ("dummyKey2", 101, [("[hey@99/100]", "7", 99)])],
    ),
    # The record is in the past, but its window's end is not: held even with no grace.
    "finalResultsWithZeroGraceShouldStillBufferUntilTheWindowEnd": (
        100,
        0,
        [("hey", 5, []), ("dummyKey", 100, [("[hey@0/100]", "7", 5)])],
    ),
}


@pytest.mark.parametrize("method", FINAL_CASES)
def test_KTableSuppressProcessorTest_final_results(method: str) -> None:
    size, grace, steps = FINAL_CASES[method]
    windows = sk.TimeWindows.of_size_and_grace(size / 1000, grace / 1000)
    app, source, out = _windowed(windows, sk.Suppressed.until_window_closes())
    with TopologyTestDriver(app) as driver:
        for key, ts, expected in steps:
            driver.pipe(source, key, "7", timestamp_ms=ts)
            assert records(driver, out) == expected


def test_KTableSuppressProcessorTest_finalResultsShouldDropTombstonesForTimeWindows() -> None:
    """The window's result is deleted before it closes: final results emit nothing."""
    app, source, out = _windowed(
        sk.TimeWindows.of_size_and_grace(0.100, 0), sk.Suppressed.until_window_closes()
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", "5", timestamp_ms=5)
        driver.pipe(source, "hey", "delete", timestamp_ms=6)
        driver.pipe(source, "dummyKey", "7", timestamp_ms=100)
        assert records(driver, out) == []


def test_KTableSuppressProcessorTest_suppressShouldNotDropTombstonesForTimeWindows() -> None:
    """The tombstone goes on, with the headers of the record that made it."""
    app, source, out = _windowed(
        sk.TimeWindows.of_size_with_no_grace(0.100),
        sk.Suppressed.until_time_limit(0, sk.BufferConfig.max_records(0)),
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", "5", timestamp_ms=5)
        driver.pipe(source, "hey", "delete", timestamp_ms=50, headers=HEADERS)
        got = [(r.key, r.value, tuple(r.headers), r.timestamp) for r in driver.read_records(out)]
        assert got == [("[hey@0/100]", "5", (), 5), ("[hey@0/100]", None, HEADERS, 50)]


def test_KTableSuppressProcessorTest_suppressShouldNotDropTombstonesForSessionWindows() -> None:
    """A session that merges into a longer one is deleted: the deletion goes on."""
    app = sk.App("session-suppress")
    source = app.topic("in", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=int)
    windows = sk.SessionWindows.of_inactivity_gap_with_no_grace(0.010)
    counts = app.stream(source).group_by_key().windowed_by(windows).count(close_idle_after=None)
    suppressed = sk.Suppressed.until_time_limit(0, sk.BufferConfig.max_records(0))
    counts.suppress(suppressed).to_stream().map(_kafka_string).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", "a", timestamp_ms=0)
        driver.pipe(source, "hey", "b", timestamp_ms=5)
        assert records(driver, out) == [
            ("[hey@0/0]", 1, 0),
            ("[hey@0/0]", None, 0),
            ("[hey@0/5]", 2, 5),
        ]


def test_KTableSuppressProcessorTest_suppressShouldNotDropTombstonesForKTable() -> None:
    app, source, out = _table(sk.Suppressed.until_time_limit(0, sk.BufferConfig.max_records(0)))
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", 5, timestamp_ms=99)
        driver.pipe(source, "hey", None, timestamp_ms=100, headers=HEADERS)
        got = [(r.key, r.value, tuple(r.headers), r.timestamp) for r in driver.read_records(out)]
        assert got == [("hey", 5, (), 99), ("hey", None, HEADERS, 100)]


def test_KTableSuppressProcessorTest_suppressShouldEmitWhenOverRecordCapacity() -> None:
    app, source, out = _table(
        sk.Suppressed.until_time_limit(DAYS_100, sk.BufferConfig.max_records(1))
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "hey", 5, timestamp_ms=100)
        assert records(driver, out) == []
        driver.pipe(source, "dummyKey", 5, timestamp_ms=101)
        assert records(driver, out) == [("hey", 5, 100)]
