"""Kafka Streams conformance: KStream-KTable joins.

Ported from org.apache.kafka.streams.kstream.internals.KStreamKTableLeftJoinTest: a
stream record joins the table's current row (None where there is none), keeps its
own timestamp, and a null key joins nothing but is not dropped (KIP-962); and from
KStreamKTableJoinTest: the inner join, with and without a grace.
"""

from __future__ import annotations

import random

import pytest
from conformance import JoinStep, records, run_join_steps, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

X_NULL_TWO = [(0, "X0+null", 0), (1, "X1+null", 1)]
X_Y_TWO = [(0, "X0+Y0", 0), (1, "X1+Y1", 1), (2, "X2+null", 2), (3, "X3+null", 3)]
CASES: dict[str, list[JoinStep]] = {
    "shouldJoinWithEmptyTableOnStreamUpdates": [(("stream", 2, "X"), X_NULL_TWO)],
    "shouldNotJoinOnTableUpdates": [
        (("stream", 2, "X"), X_NULL_TWO),
        (("table", 2, "Y"), []),
        (("stream", 4, "X"), X_Y_TWO),
        (("table", 4, "YY"), []),
        (("stream", 4, "X"), [(k, f"X{k}+YY{k}", k) for k in range(4)]),
        (("table", 4, "YYY"), []),
    ],
    "shouldJoinRegardlessIfMatchFoundOnStreamUpdates": [
        (("table", 2, "Y"), []),
        (("stream", 4, "X"), X_Y_TWO),
    ],
    "shouldClearTableEntryOnNullValueUpdates": [
        (("table", 4, "Y"), []),
        (("stream", 4, "X"), [(k, f"X{k}+Y{k}", k) for k in range(4)]),
        (("nulls", 2, ""), []),
        (
            ("stream", 4, "XX"),
            [(0, "XX0+null", 0), (1, "XX1+null", 1), (2, "XX2+Y2", 2), (3, "XX3+Y3", 3)],
        ),
    ],
}


# KStreamKTableJoinTest: the inner join; a stream record without a row joins nothing.
INNER_CASES: dict[str, list[JoinStep]] = {
    "shouldNotJoinWithEmptyTableOnStreamUpdates": [(("stream", 2, "X"), [])],
    "shouldNotJoinOnTableUpdates": [
        (("stream", 2, "X"), []),
        (("table", 2, "Y"), []),
        (("stream", 4, "X"), X_Y_TWO[:2]),
        (("table", 4, "YY"), []),
        (("stream", 4, "X"), [(k, f"X{k}+YY{k}", k) for k in range(4)]),
        (("table", 4, "YYY"), []),
    ],
    "shouldJoinOnlyIfMatchFoundOnStreamUpdates": [
        (("table", 2, "Y"), []),
        (("stream", 4, "X"), X_Y_TWO[:2]),
    ],
    "shouldClearTableEntryOnNullValueUpdates": [
        (("table", 4, "Y"), []),
        (("stream", 4, "X"), [(k, f"X{k}+Y{k}", k) for k in range(4)]),
        (("nulls", 2, ""), []),
        (("stream", 4, "XX"), [(2, "XX2+Y2", 2), (3, "XX3+Y3", 3)]),
    ],
}


def _join(
    how: str, grace: float | None = None
) -> tuple[sk.App, tuple[sk.Topic, sk.Topic, sk.Topic]]:
    """The test classes' setUp: `how` is "left" or "inner"; with a grace, makeJoin's
    versioned table of 5 minutes' history."""
    app = sk.App(f"kstream-ktable-{how}-join")
    stream, table, out = (
        app.topic(n, key_type=int, value_type=str) for n in ("streamTopic", "tableTopic", "out")
    )
    source = app.stream(stream)
    join = source.left_join if how == "left" else source.join
    if grace is None:
        join(app.ktable(table), tostring_joiner).to(out)
    else:
        versioned = app.ktable(table, name="V-grace", history_retention=300)
        join(versioned, tostring_joiner, grace=grace, name="Grace").to(out)
    return app, (stream, table, out)


@pytest.mark.parametrize(
    ("how", "method"),
    [("left", m) for m in CASES] + [("inner", m) for m in INNER_CASES],
    ids=[f"KStreamKTableLeftJoinTest.{m}" for m in CASES]
    + [f"KStreamKTableJoinTest.{m}" for m in INNER_CASES],
)
def test_KStreamKTableJoin_steps(how: str, method: str) -> None:
    """KStreamKTable(Left)JoinTest.<method>; pushToTable's timestamps are random in Kafka's."""
    app, topics = _join(how)
    table_timestamps = random.Random(method)
    steps = (CASES if how == "left" else INNER_CASES)[method]
    with TopologyTestDriver(app) as driver:
        run_join_steps(driver, topics, steps, lambda _key: table_timestamps.randrange(2**31 - 1))


def test_KStreamKTableLeftJoinTest_shouldNotDropLeftNullKey() -> None:
    app, (stream, table, out) = _join("left")
    with TopologyTestDriver(app) as driver:
        driver.pipe(table, 0, "Y0", timestamp_ms=7)
        driver.pipe(stream, None, "A", timestamp_ms=0)
        assert records(driver, out) == [(None, "A+null", 0)]


def test_KStreamKTableLeftJoinTest_shouldLogAndMeterWhenSkippingNullLeftValue() -> None:
    app, (stream, _table, out) = _join("left")
    with TopologyTestDriver(app) as driver:
        driver.pipe(stream, 1, None, timestamp_ms=0)
        assert records(driver, out) == []
    node = "KSTREAM-LEFTJOIN-0000000003"
    assert app.metrics.value("dropped_records", node=node, reason="null value") == 1


def test_KStreamKTableJoinTest_shouldDelayJoinByGracePeriod() -> None:
    app, topics = _join("inner", grace=0.002)
    stream, _table, out = topics
    with TopologyTestDriver(app) as driver:
        run_join_steps(
            driver,
            topics,
            [
                (("table", 4, "Y"), []),
                (("stream", 4, "X"), [(0, "X0+Y0", 0), (1, "X1+Y1", 1)]),
                (("table", 4, "YY"), []),
                (("stream", 4, "X"), [(0, "X0+YY0", 0), (1, "X1+YY1", 1)]),
            ],
            lambda _key: 0,
        )
        driver.pipe(stream, 5, "test", timestamp_ms=7)
        assert records(driver, out) == [
            (2, "X2+YY2", 2),
            (2, "X2+YY2", 2),
            (3, "X3+YY3", 3),
            (3, "X3+YY3", 3),
        ]
        run_join_steps(driver, topics, [(("table", 4, "YYY"), [])], lambda _key: 0)


def test_KStreamKTableJoinTest_shouldHandleLateJoinsWithGracePeriod() -> None:
    app, topics = _join("inner", grace=0.002)
    with TopologyTestDriver(app) as driver:
        run_join_steps(
            driver,
            topics,
            [
                (("table", 4, "Y"), []),
                (("stream", 4, "X"), [(0, "X0+Y0", 0), (1, "X1+Y1", 1)]),
                (("stream", 1, "X"), [(0, "X0+Y0", 0)]),  # late already: joined at once
            ],
            lambda _key: 0,
        )


@pytest.mark.parametrize(("key", "value"), [(None, "A"), (1, None)])
def test_KStreamKTableJoinTest_shouldLogAndMeterWhenSkippingNullLeftKeyOrValue(
    key: int | None, value: str | None
) -> None:
    """shouldLogAndMeterWhenSkippingNullLeftKey and ...NullLeftValue: dropped, counted."""
    app, (stream, table, out) = _join("inner")
    with TopologyTestDriver(app) as driver:
        driver.pipe(table, 1, "Y1", timestamp_ms=0)
        driver.pipe(stream, key, value, timestamp_ms=0)
        assert records(driver, out) == []
    node = "KSTREAM-JOIN-0000000003"
    reason = "null key" if key is None else "null value"
    assert app.metrics.value("dropped_records", node=node, reason=reason) == 1
