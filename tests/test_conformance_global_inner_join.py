"""Kafka Streams conformance: KStream-GlobalKTable inner join.

Ported from org.apache.kafka.streams.kstream.internals.KStreamGlobalKTableJoinTest:
the stream's value carries the table key after a comma; a record whose selected
key has no row, or whose selector gives none, joins nothing; a null stream key
still joins (KIP-962). Stream records are stamped 0, 1, 2, ... as Kafka's test
input topic advances by 1 ms a record.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

KEYS = (0, 1, 2, 3)


def _foreign_key(_key: int | None, value: str) -> str | None:
    tokens = value.split(",")
    return tokens[1] if len(tokens) > 1 else None


class _Steps:
    def __init__(self, driver: TopologyTestDriver, app: sk.App) -> None:
        self.driver, self.app = driver, app
        self.stream_ts = 0

    def stream(
        self, count: int, prefix: str, foreign_key: bool = True, null_key: bool = False
    ) -> None:
        topic = self.app.topic("streamTopic", key_type=int, value_type=str)
        for i, key in enumerate(KEYS[:count]):
            value = f"{prefix}{key}" + (f",FKey{key}" if foreign_key else "")
            key_in = None if null_key and i == 0 else key
            self.driver.pipe(topic, key_in, value, timestamp_ms=self.stream_ts)
            self.stream_ts += 1

    def table(self, count: int, prefix: str | None) -> None:
        topic = self.app.topic("globalTableTopic", key_type=str, value_type=str)
        for key in KEYS[:count]:
            self.driver.pipe(topic, f"FKey{key}", None if prefix is None else f"{prefix}{key}")

    def out(self) -> list[tuple[Any, str, int]]:
        return records(self.driver, self.app.topic("out", key_type=int, value_type=str))


def _run(script: Any) -> None:
    app = sk.App("global-inner-join")
    stream = app.topic("streamTopic", key_type=int, value_type=str)
    table = app.topic("globalTableTopic", key_type=str, value_type=str)
    out = app.topic("out", key_type=int, value_type=str)
    app.stream(stream).join(
        app.global_ktable(table), tostring_joiner, key_selector=_foreign_key
    ).to(out)
    with TopologyTestDriver(app) as driver:
        script(_Steps(driver, app))


def _shouldNotJoinWithEmptyGlobalTableOnStreamUpdates(s: _Steps) -> None:
    s.stream(2, "X")
    assert s.out() == []


def _shouldNotJoinOnGlobalTableUpdates(s: _Steps) -> None:
    s.stream(2, "X")
    assert s.out() == []
    s.table(2, "Y")
    assert s.out() == []
    s.stream(4, "X")
    assert s.out() == [(0, "X0,FKey0+Y0", 2), (1, "X1,FKey1+Y1", 3)]
    s.table(4, "YY")
    assert s.out() == []
    s.stream(4, "X")
    assert s.out() == [(k, f"X{k},FKey{k}+YY{k}", 6 + k) for k in KEYS]
    s.table(4, "YYY")
    assert s.out() == []


def _shouldJoinOnlyIfMatchFoundOnStreamUpdates(s: _Steps) -> None:
    s.table(2, "Y")
    assert s.out() == []
    s.stream(4, "X")
    assert s.out() == [(0, "X0,FKey0+Y0", 0), (1, "X1,FKey1+Y1", 1)]


def _shouldClearGlobalTableEntryOnNullValueUpdates(s: _Steps) -> None:
    s.table(4, "Y")
    s.stream(4, "X")
    assert s.out() == [(k, f"X{k},FKey{k}+Y{k}", k) for k in KEYS]
    s.table(2, None)
    assert s.out() == []
    s.stream(4, "XX")
    assert s.out() == [(2, "XX2,FKey2+Y2", 6), (3, "XX3,FKey3+Y3", 7)]


def _shouldNotJoinOnNullKeyMapperValues(s: _Steps) -> None:
    s.table(4, "Y")
    s.stream(4, "XXX", foreign_key=False)
    assert s.out() == []


def _shouldJoinOnNullKeyWithNonNullKeyMapperValues(s: _Steps) -> None:
    s.table(2, "Y")
    s.stream(4, "X", null_key=True)
    assert s.out() == [(None, "X0,FKey0+Y0", 0), (1, "X1,FKey1+Y1", 1)]


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
