"""Kafka Streams conformance: KStream-GlobalKTable inner join.

Ported from org.apache.kafka.streams.kstream.internals.KStreamGlobalKTableJoinTest:
the stream's value carries the table key after a comma; a record whose selected
key has no row, or whose selector gives none, joins nothing; a null stream key
still joins (KIP-962). Stream records are stamped 0, 1, 2, ... as Kafka's test
input topic advances by 1 ms a record.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conformance import GLOBAL_JOIN_KEYS, GlobalJoinDriver, records, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

KEYS = GLOBAL_JOIN_KEYS


def _run(script: Callable[[GlobalJoinDriver], None]) -> None:
    GlobalJoinDriver("join").run(script)


def _shouldNotJoinWithEmptyGlobalTableOnStreamUpdates(s: GlobalJoinDriver) -> None:
    s.push_to_stream(2, "X")
    assert s.results() == []


def _shouldNotJoinOnGlobalTableUpdates(s: GlobalJoinDriver) -> None:
    s.push_to_stream(2, "X")
    assert s.results() == []
    s.push_to_global_table(2, "Y")
    assert s.results() == []
    s.push_to_stream(4, "X")
    assert s.results() == [(0, "X0,FKey0+Y0", 2), (1, "X1,FKey1+Y1", 3)]
    s.push_to_global_table(4, "YY")
    assert s.results() == []
    s.push_to_stream(4, "X")
    assert s.results() == [(k, f"X{k},FKey{k}+YY{k}", 6 + k) for k in KEYS]
    s.push_to_global_table(4, "YYY")
    assert s.results() == []


def _shouldJoinOnlyIfMatchFoundOnStreamUpdates(s: GlobalJoinDriver) -> None:
    s.push_to_global_table(2, "Y")
    assert s.results() == []
    s.push_to_stream(4, "X")
    assert s.results() == [(0, "X0,FKey0+Y0", 0), (1, "X1,FKey1+Y1", 1)]


def _shouldClearGlobalTableEntryOnNullValueUpdates(s: GlobalJoinDriver) -> None:
    s.push_to_global_table(4, "Y")
    s.push_to_stream(4, "X")
    assert s.results() == [(k, f"X{k},FKey{k}+Y{k}", k) for k in KEYS]
    s.push_to_global_table(2, None)
    assert s.results() == []
    s.push_to_stream(4, "XX")
    assert s.results() == [(2, "XX2,FKey2+Y2", 6), (3, "XX3,FKey3+Y3", 7)]


def _shouldNotJoinOnNullKeyMapperValues(s: GlobalJoinDriver) -> None:
    s.push_to_global_table(4, "Y")
    s.push_to_stream(4, "XXX", include_foreign_key=False)
    assert s.results() == []


def _shouldJoinOnNullKeyWithNonNullKeyMapperValues(s: GlobalJoinDriver) -> None:
    s.push_to_global_table(2, "Y")
    s.push_to_stream(4, "X", null_key=True)
    assert s.results() == [(None, "X0,FKey0+Y0", 0), (1, "X1,FKey1+Y1", 1)]


CASES = {
    name.removeprefix("_"): fn for name, fn in list(globals().items()) if name.startswith("_should")
}


@pytest.mark.parametrize("method", CASES)
def test_KStreamGlobalKTableJoinTest(method: str) -> None:
    _run(CASES[method])


@pytest.mark.parametrize("how", ["left_join", "join"])
def test_GlobalKTableJoinsTest_shouldJoinWithStream(how: str) -> None:
    """GlobalKTableJoinsTest.shouldLeftJoinWithStream / shouldInnerJoinWithStream: the
    stream's value is the table key; results keep the stream record's timestamp."""
    app = sk.App("global-joins")
    global_topic, stream_topic, out = (
        app.topic(n, key_type=str, value_type=str) for n in ("global", "stream", "out")
    )
    stream = app.stream(stream_topic)
    join = getattr(stream, how)
    join(app.global_ktable(global_topic), tostring_joiner, key_selector=lambda k, v: v).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(global_topic, "a", "A", timestamp_ms=1)
        driver.pipe(global_topic, "b", "B", timestamp_ms=5)
        for key, value, ts in [("1", "a", 2), ("2", "b", 10), ("3", "c", 3)]:
            driver.pipe(stream_topic, key, value, timestamp_ms=ts)
        last = {key: (value, ts) for key, value, ts in records(driver, out)}
    expected = {"1": ("a+A", 2), "2": ("b+B", 10)}
    if how == "left_join":
        expected["3"] = ("c+null", 3)
    assert last == expected
