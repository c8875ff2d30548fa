"""Kafka Streams conformance: windowed aggregations of a grouped stream.

Ported from org.apache.kafka.streams.kstream.internals.KStreamWindowAggregateTest.
A window's result carries the larger of the record's timestamp and the window's
previous one; a record is skipped for a window once stream time has reached the
window's end plus the grace.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records, string_init, string_topics, tostring_adder

import streamkit as sk
from streamkit.testing import TopologyTestDriver

W = sk.Windowed


def windowed_topics(app: sk.App, *names: str) -> list[sk.Topic]:
    """Output topics keyed by `Windowed`, which travel as JSON `[key, start, end]`."""
    return [app.topic(n, key_type=Any, value_type=str) for n in names]


def _rows(*chunks: list[Any]) -> list[Any]:
    """Expected rows written a few to a line."""
    return [row for chunk in chunks for row in chunk]


def windowed(driver: TopologyTestDriver, topic: sk.Topic) -> list[tuple[Any, Any, int]]:
    return [(W(*key), value, ts) for key, value, ts in records(driver, topic)]


def _hopping_aggregate(app: sk.App, topic: sk.Topic, store: str, init: Any = string_init) -> Any:
    """TimeWindows.ofSizeAndGrace(10 ms, 100 ms).advanceBy(5 ms), TOSTRING_ADDER."""
    windows = sk.TimeWindows(0.010, advance=0.005, grace=0.100)
    return (
        app.stream(topic)
        .group_by_key()
        .windowed_by(windows)
        .aggregate(init, tostring_adder, name=store, close_idle_after=None)
    )


def test_KStreamWindowAggregateTest_testAggBasic() -> None:
    app = sk.App("window-agg-basic")
    (topic1,) = string_topics(app, "topic1")
    (out,) = windowed_topics(app, "out")
    _hopping_aggregate(app, topic1, "topic1-Canonized").to_stream().to(out)
    inputs = [
        ("A", "1", 0), ("B", "2", 1), ("C", "3", 2), ("D", "4", 3), ("A", "1", 4),
        ("A", "1", 5), ("B", "2", 6), ("D", "4", 7), ("B", "2", 8), ("C", "3", 9),
        ("A", "1", 10), ("B", "2", 11), ("D", "4", 12), ("B", "2", 13), ("C", "3", 14),
        ("B", "1", 3), ("B", "2", 2), ("B", "3", 9),
    ]  # fmt: skip
    with TopologyTestDriver(app) as driver:
        for key, value, ts in inputs:
            driver.pipe(topic1, key, value, timestamp_ms=ts)
        assert windowed(driver, out) == [
            (W("A", 0, 10), "0+1", 0),
            (W("B", 0, 10), "0+2", 1),
            (W("C", 0, 10), "0+3", 2),
            (W("D", 0, 10), "0+4", 3),
            (W("A", 0, 10), "0+1+1", 4),
            (W("A", 0, 10), "0+1+1+1", 5),
            (W("A", 5, 15), "0+1", 5),
            (W("B", 0, 10), "0+2+2", 6),
            (W("B", 5, 15), "0+2", 6),
            (W("D", 0, 10), "0+4+4", 7),
            (W("D", 5, 15), "0+4", 7),
            (W("B", 0, 10), "0+2+2+2", 8),
            (W("B", 5, 15), "0+2+2", 8),
            (W("C", 0, 10), "0+3+3", 9),
            (W("C", 5, 15), "0+3", 9),
            (W("A", 5, 15), "0+1+1", 10),
            (W("A", 10, 20), "0+1", 10),
            (W("B", 5, 15), "0+2+2+2", 11),
            (W("B", 10, 20), "0+2", 11),
            (W("D", 5, 15), "0+4+4", 12),
            (W("D", 10, 20), "0+4", 12),
            (W("B", 5, 15), "0+2+2+2+2", 13),
            (W("B", 10, 20), "0+2+2", 13),
            (W("C", 5, 15), "0+3+3", 14),
            (W("C", 10, 20), "0+3", 14),
            (W("B", 0, 10), "0+2+2+2+1", 8),
            (W("B", 0, 10), "0+2+2+2+1+2", 8),
            (W("B", 0, 10), "0+2+2+2+1+2+3", 9),
            (W("B", 5, 15), "0+2+2+2+2+3", 13),
        ]


def test_KStreamWindowAggregateTest_testJoin() -> None:
    """Two windowed tables joined: each result carries the later of the two rows' times."""
    app = sk.App("window-agg-join")
    topic1, topic2 = string_topics(app, "topic1", "topic2")
    out1, out2, joined = windowed_topics(app, "out1", "out2", "joined")
    table1 = _hopping_aggregate(app, topic1, "topic1-Canonized")
    table2 = _hopping_aggregate(app, topic2, "topic2-Canonized")
    table1.to_stream().to(out1)
    table2.to_stream().to(out2)
    table1.join(table2, lambda p1, p2: f"{p1}%{p2}").to_stream().to(joined)
    a0, b0, c0, d0 = (W(k, 0, 10) for k in "ABCD")
    a5, b5, c5, d5 = (W(k, 5, 15) for k in "ABCD")
    # (topic, inputs, then what out1, out2 and the join each emit), step by step.
    steps: list[tuple[sk.Topic, list[tuple[str, str, int]], list[list[Any]]]] = [
        (
            topic1,
            [("A", "1", 0), ("B", "2", 1), ("C", "3", 2), ("D", "4", 3), ("A", "1", 9)],
            [
                _rows(
                    [(a0, "0+1", 0), (b0, "0+2", 1), (c0, "0+3", 2), (d0, "0+4", 3)],
                    [(a0, "0+1+1", 9), (a5, "0+1", 9)],
                ),
                [],
                [],
            ],
        ),
        (
            topic1,
            [("A", "1", 5), ("B", "2", 6), ("D", "4", 7), ("B", "2", 8), ("C", "3", 9)],
            [
                _rows(
                    [(a0, "0+1+1+1", 9), (a5, "0+1+1", 9), (b0, "0+2+2", 6), (b5, "0+2", 6)],
                    [(d0, "0+4+4", 7), (d5, "0+4", 7), (b0, "0+2+2+2", 8), (b5, "0+2+2", 8)],
                    [(c0, "0+3+3", 9), (c5, "0+3", 9)],
                ),
                [],
                [],
            ],
        ),
        (
            topic2,
            [("A", "a", 0), ("B", "b", 1), ("C", "c", 2), ("D", "d", 20), ("A", "a", 20)],
            [
                [],
                _rows(
                    [(a0, "0+a", 0), (b0, "0+b", 1), (c0, "0+c", 2), (W("D", 15, 25), "0+d", 20)],
                    [(W("D", 20, 30), "0+d", 20), (W("A", 15, 25), "0+a", 20)],
                    [(W("A", 20, 30), "0+a", 20)],
                ),
                [(a0, "0+1+1+1%0+a", 9), (b0, "0+2+2+2%0+b", 8), (c0, "0+3+3%0+c", 9)],
            ],
        ),
        (
            topic2,
            [("A", "a", 5), ("B", "b", 6), ("D", "d", 7), ("D", "d", 18), ("A", "a", 21)],
            [
                [],
                _rows(
                    [(a0, "0+a+a", 5), (a5, "0+a", 5), (b0, "0+b+b", 6), (b5, "0+b", 6)],
                    [(d0, "0+d", 7), (d5, "0+d", 7), (W("D", 10, 20), "0+d", 18)],
                    [(W("D", 15, 25), "0+d+d", 20), (W("A", 15, 25), "0+a+a", 21)],
                    [(W("A", 20, 30), "0+a+a", 21)],
                ),
                _rows(
                    [(a0, "0+1+1+1%0+a+a", 9), (a5, "0+1+1%0+a", 9), (b0, "0+2+2+2%0+b+b", 8)],
                    [(b5, "0+2+2%0+b", 8), (d0, "0+4+4%0+d", 7), (d5, "0+4%0+d", 7)],
                ),
            ],
        ),
    ]
    with TopologyTestDriver(app) as driver:
        for number, (topic, inputs, expected) in enumerate(steps):
            for key, value, ts in inputs:
                driver.pipe(topic, key, value, timestamp_ms=ts)
            got = [windowed(driver, out) for out in (out1, out2, joined)]
            assert got == expected, f"step {number}"


def _kafka_window_string(window: sk.Windowed, value: str) -> tuple[str, str]:
    """Kafka's Windowed.toString: `[key@start/end]`."""
    return f"[{window.key}@{window.start_ms}/{window.end_ms}]", value


def _expiry_app(windows: sk.TimeWindows) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("window-agg-expired")
    topic, output = string_topics(app, "topic", "output")
    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(windows)
        .aggregate(lambda: "", tostring_adder, name="topic1-Canonicalized", close_idle_after=None)
        .to_stream()
        .map(_kafka_window_string)
        .to(output)
    )
    return app, topic, output


def _dropped(app: sk.App) -> float:
    node = "KSTREAM-AGGREGATE-0000000001"
    return sum(
        app.metrics.value("dropped_records", node=node, reason=reason)
        for reason in ("late", "late for some windows")
    )


def test_KStreamWindowAggregateTest_shouldLogAndMeterWhenSkippingExpiredWindow() -> None:
    app, topic, output = _expiry_app(sk.TimeWindows(0.010, advance=0.005, grace=0.090))
    with TopologyTestDriver(app) as driver:
        for value, ts in [("100", 100), *((str(t), t) for t in range(7))]:
            driver.pipe(topic, "k", value, timestamp_ms=ts)
        assert records(driver, output) == [
            ("[k@95/105]", "+100", 100),
            ("[k@100/110]", "+100", 100),
            ("[k@5/15]", "+5", 5),
            ("[k@5/15]", "+5+6", 6),
        ]
    assert _dropped(app) == 7


def test_KStreamWindowAggregateTest_shouldLogAndMeterWhenSkippingExpiredWindowByGrace() -> None:
    app, topic, output = _expiry_app(sk.TimeWindows(0.010, advance=0.010, grace=0.090))
    with TopologyTestDriver(app) as driver:
        inputs = [("100", 200), *((str(i), 100 + i) for i in range(6)), ("6", 6)]
        for value, ts in inputs:
            driver.pipe(topic, "k", value, timestamp_ms=ts)
        assert records(driver, output) == [("[k@200/210]", "+100", 200)]
    assert _dropped(app) == 7


# TimeWindowedKStreamImplTest: TimeWindows.ofSizeWithNoGrace(500 ms) and processData.
IMPL_INPUT = [("1", "1", 10), ("1", "2", 15), ("1", "3", 500), ("2", "10", 550)]
IMPL_INPUT += [("2", "20", 500), ("2", "30", 1000)]
# method -> the six results on update: [1@0] twice, [1@500], [2@500] twice, [2@1000].
IMPL_CASES: dict[str, list[Any]] = {
    "shouldCountWindowed": [1, 2, 1, 1, 2, 1],
    "shouldReduceWindowed": ["1", "1+2", "3", "10", "10+20", "30"],
    "shouldAggregateWindowed": ["0+1", "0+1+2", "0+3", "0+10", "0+10+20", "0+30"],
}


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("method", IMPL_CASES)
def test_TimeWindowedKStreamImplTest(method: str, emit: str) -> None:
    """TimeWindowedKStreamImplTest.<method>, EmitStrategy onWindowUpdate / onWindowClose."""
    app = sk.App("time-windowed-impl")
    (topic,) = string_topics(app, "input")
    out = app.topic("out", key_type=Any, value_type=Any)
    windowed = (
        app.stream(topic).group_by_key().windowed_by(sk.TimeWindows.of_size_with_no_grace(0.5))
    )
    options: dict[str, Any] = {"emit": emit, "close_idle_after": None}
    if method == "shouldCountWindowed":
        table = windowed.count(**options)
    elif method == "shouldReduceWindowed":
        table = windowed.reduce(lambda a, b: f"{a}+{b}", **options)
    else:
        table = windowed.aggregate(string_init, tostring_adder, **options)
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in IMPL_INPUT:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        got = [(W(*key), value, ts) for key, value, ts in records(driver, out)]
    k1w0, k1w1, k2w1, k2w2 = (
        W("1", 0, 500),
        W("1", 500, 1000),
        W("2", 500, 1000),
        W("2", 1000, 1500),
    )
    v = IMPL_CASES[method]
    if emit == "final":
        assert got == [(k1w0, v[1], 15), (k1w1, v[2], 500), (k2w1, v[4], 550)]
    else:
        assert got == [
            (k1w0, v[0], 10),
            (k1w0, v[1], 15),
            (k1w1, v[2], 500),
            (k2w1, v[3], 550),
            (k2w1, v[4], 550),
            (k2w2, v[5], 1000),
        ]


# TimeWindowedKStreamImplTest.shouldMaterialize*: the store as Kafka's window store
# shows it without a cache. Its retention is the size plus the grace (500 ms): a
# window goes once its start is that far behind the latest start written (1000),
# which Kafka's emit-final store counts inclusively.
MATERIALIZED: dict[str, tuple[str, list[Any]]] = {
    "shouldMaterializeCount": ("count-store", [2, 1, 2, 1]),
    "shouldMaterializeReduced": ("reduced", ["1+2", "3", "10+20", "30"]),
    "shouldMaterializeAggregated": ("aggregated", ["0+1+2", "0+3", "0+10+20", "0+30"]),
}


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("method", MATERIALIZED)
def test_TimeWindowedKStreamImplTest_materialized(method: str, emit: str) -> None:
    app = sk.App("time-windowed-store")
    (topic,) = string_topics(app, "input")
    windowed = (
        app.stream(topic).group_by_key().windowed_by(sk.TimeWindows.of_size_with_no_grace(0.5))
    )
    store, values = MATERIALIZED[method]
    # Only the count takes Kafka's emit strategy in these three methods.
    options: dict[str, Any] = {"name": store, "close_idle_after": None}
    options["emit"] = emit if method == "shouldMaterializeCount" else "update"
    if method == "shouldMaterializeCount":
        windowed.count(**options)
    elif method == "shouldMaterializeReduced":
        windowed.reduce(lambda a, b: f"{a}+{b}", **options)
    else:
        windowed.aggregate(string_init, tostring_adder, **options)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in IMPL_INPUT:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        rows = {W(*k): tuple(v) for k, v in driver.timestamped_store(store).items()}
    k1w1, k2w1, k2w2 = W("1", 500, 1000), W("2", 500, 1000), W("2", 1000, 1500)
    if options["emit"] == "final":
        assert rows == {k1w1: (values[1], 500), k2w1: (values[2], 550), k2w2: (values[3], 1000)}
    else:
        assert rows == {k2w2: (values[3], 1000)}


def _none_for_x(key: Any, value: str, agg: str) -> str | None:
    """MockAggregator.TOSTRING_ADDER, but None for the value "X"."""
    return None if value == "X" else tostring_adder(key, value, agg)


def test_a_window_aggregate_giving_None_deletes_the_window() -> None:
    """Kafka's KStreamWindowAggregate stores ValueAndTimestamp.make(null): the window
    is deleted, the deletion goes on, and the window's next record starts again from
    the initializer (MockAggregator.TOSTRING_ADDER, here None for "X")."""
    app = sk.App("window-none")
    (topic,) = string_topics(app, "input")
    (out,) = windowed_topics(app, "out")

    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.TimeWindows.of_size_with_no_grace(0.1))
        .aggregate(string_init, _none_for_x, name="agg", close_idle_after=None)
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        for value, ts in (("A", 10), ("X", 20), ("B", 30)):
            driver.pipe(topic, "k", value, timestamp_ms=ts)
        window = W("k", 0, 100)
        assert windowed(driver, out) == [
            (window, "0+A", 10),
            (window, None, 20),
            (window, "0+B", 30),
        ]
        assert driver.store("agg") == {window: "0+B"}


@pytest.mark.parametrize("emit", ["update", "final"])
@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_a_sliding_or_session_aggregate_giving_None_deletes_the_window(
    kind: str, emit: str
) -> None:
    """KStreamSlidingWindowAggregate puts ValueAndTimestamp.make(null) and
    KStreamSessionWindowAggregate puts a null aggregate: either store then removes the
    window, the deletion goes on (with emit-final, nothing is emitted for it), and a
    later record finds no window there, so it starts from the initializer."""
    app = sk.App(f"{kind}-none-{emit}")
    (topic,) = string_topics(app, "input")
    (out,) = windowed_topics(app, "out")
    grouped = app.stream(topic).group_by_key()
    options: dict[str, Any] = {"name": "agg", "emit": emit, "close_idle_after": None}
    if kind == "sliding":
        windows = grouped.windowed_by(sk.SlidingWindows.of_time_difference_with_no_grace(0.1))
        table = windows.aggregate(string_init, _none_for_x, **options)
    else:
        sessions = grouped.windowed_by(sk.SessionWindows.of_inactivity_gap_with_no_grace(0.1))
        table = sessions.aggregate(
            string_init, _none_for_x, merger=lambda k, a, b: f"{a}|{b}", **options
        )
    table.to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        for value, ts in (("A", 10), ("X", 20), ("B", 30)):
            driver.pipe(topic, "k", value, timestamp_ms=ts)
        if kind == "sliding":
            # X has the window [0, 100] and its predecessor's right window [11, 111].
            last, updates = (
                W("k", 0, 100),
                [
                    (W("k", 0, 100), "0+A", 10),
                    (W("k", 11, 111), None, 20),
                    (W("k", 0, 100), None, 20),
                    (W("k", 0, 100), "0+B", 30),
                ],
            )
        else:
            # X merges A's session [10, 10] into [10, 20], which it deletes.
            last, updates = (
                W("k", 30, 30),
                [
                    (W("k", 10, 10), "0+A", 10),
                    (W("k", 10, 10), None, 10),
                    (W("k", 10, 20), None, 20),
                    (W("k", 30, 30), "0+B", 30),
                ],
            )
        assert driver.store("agg") == {last: "0+B"}
        if emit == "update":
            assert windowed(driver, out) == updates
        else:
            driver.pipe(topic, "k", "C", timestamp_ms=1_000)  # closes them all
            assert windowed(driver, out) == [(last, "0+B", 30)]


def _emit_app(emit: str) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """TimeWindows.ofSizeAndGrace(10 ms, 5 ms).advanceBy(5 ms), TOSTRING_ADDER; Kafka's
    emit interval set to 0 (checked on every record, as streamkit does)."""
    app = sk.App(f"window-emit-{emit}")
    (topic,) = string_topics(app, "topic")
    (out,) = windowed_topics(app, "out")
    (
        app.stream(topic)
        .group_by_key()
        .windowed_by(sk.TimeWindows(0.010, advance=0.005, grace=0.005))
        .aggregate(string_init, tostring_adder, emit=emit, close_idle_after=None)
        .to_stream()
        .to(out)
    )
    return app, topic, out


@pytest.mark.parametrize("emit", ["update", "final"])
def test_KStreamWindowAggregateTest_shouldNotEmitFinalIfNotProgressEnough(emit: str) -> None:
    app, topic, out = _emit_app(emit)
    final = emit == "final"
    with TopologyTestDriver(app) as driver:
        for key, value, ts in [("A", "1", 0), ("B", "2", 5), ("C", "3", 15)]:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        first = [(W("A", 0, 10), "0+1", 0), (W("B", 0, 10), "0+2", 5)]
        if not final:
            first = [
                first[0],
                first[1],
                (W("B", 5, 15), "0+2", 5),
                (W("C", 10, 20), "0+3", 15),
                (W("C", 15, 25), "0+3", 15),
            ]
        assert windowed(driver, out) == first
        driver.pipe(topic, "D", "4", timestamp_ms=15)  # stream time does not move
        expected = [] if final else [(W("D", 10, 20), "0+4", 15), (W("D", 15, 25), "0+4", 15)]
        assert windowed(driver, out) == expected
        driver.pipe(topic, "E", "5", timestamp_ms=19)  # not far enough to close [5, 15)
        expected = [] if final else [(W("E", 10, 20), "0+5", 19), (W("E", 15, 25), "0+5", 19)]
        assert windowed(driver, out) == expected


@pytest.mark.parametrize("emit", ["update", "final"])
def test_KStreamWindowAggregateTest_shouldEmitWithInterval0(emit: str) -> None:
    app, topic, out = _emit_app(emit)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in [("A", "1", 0), ("A", "1", 5), ("B", "2", 10)]:
            driver.pipe(topic, key, value, timestamp_ms=ts)
        driver.pipe(topic, "C", "3", timestamp_ms=15)
        driver.pipe(topic, "D", "4", timestamp_ms=20)
        if emit == "final":
            assert windowed(driver, out) == [
                (W("A", 0, 10), "0+1+1", 5),
                (W("A", 5, 15), "0+1", 5),
                (W("B", 5, 15), "0+2", 10),
            ]
        else:
            assert windowed(driver, out) == [
                (W("A", 0, 10), "0+1", 0),
                (W("A", 0, 10), "0+1+1", 5),
                (W("A", 5, 15), "0+1", 5),
                (W("B", 5, 15), "0+2", 10),
                (W("B", 10, 20), "0+2", 10),
                (W("C", 10, 20), "0+3", 15),
                (W("C", 15, 25), "0+3", 15),
                (W("D", 15, 25), "0+4", 20),
                (W("D", 20, 30), "0+4", 20),
            ]


def test_KStreamWindowAggregateTest_shouldLogAndMeterWhenSkippingNullKey() -> None:
    app, topic, out = _emit_app("update")
    with TopologyTestDriver(app) as driver:
        driver.pipe(topic, None, "1", timestamp_ms=0)
        assert windowed(driver, out) == []
    node = "KSTREAM-AGGREGATE-0000000001"
    assert app.metrics.value("dropped_records", node=node, reason="null key") == 1


@pytest.mark.parametrize(
    "windows",
    [
        sk.TimeWindows.of_size_with_no_grace(0.010),
        sk.SlidingWindows.of_time_difference_with_no_grace(0.010),
        sk.SessionWindows.of_inactivity_gap_with_no_grace(0.010),
    ],
    ids=["time", "sliding", "session"],
)
def test_emit_final_results_carry_the_headers_of_the_record_that_closed_them(windows: Any) -> None:
    """Kafka's emit-final windowed aggregations (AbstractKStreamTimeWindowAggregateProcessor,
    KStreamSessionWindowAggregate) forward a closed window with the headers of the
    record in hand, as KStreamKStreamOuterJoinTest.testShouldForwardCurrentHeaders
    asserts for the outer join's late results."""
    app = sk.App("final-headers")
    (source,) = string_topics(app, "input")
    out = app.topic("output", key_type=str, value_type=int)
    grouped = app.stream(source).group_by_key().windowed_by(windows)
    counts = grouped.count(emit="final", close_idle_after=None)
    counts.to_stream().map(lambda w, v: (w.key, v)).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "A", "a", timestamp_ms=0, headers=(("h", b"\x01"),))
        driver.pipe(source, "B", "b", timestamp_ms=100, headers=(("h", b"\x02"),))
        got = [(r.key, r.value, tuple(r.headers)) for r in driver.read_records(out)]
    assert got == [("A", 1, (("h", b"\x02"),))]
