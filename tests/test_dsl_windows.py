"""Windowed aggregations in event time through the TopologyTestDriver, with explicit
timestamps: tumbling, hopping, sliding and session windows, grace and late records,
emit-final, windows closed by the wall clock on idle input; and memory-broker workers
for window state restored after a restart and for idle closing in a real worker."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, read, running, table_in_files, wait_for
from hypothesis import given
from hypothesis import strategies as st

import streamkit as sk
from streamkit.dsl.windows import SessionWindows, SlidingWindows, TimeWindows, Windowed
from streamkit.serde import StrSerde
from streamkit.state.window_stores import SessionKeySerde, TimestampedSerde, ValueAndTimestamp
from streamkit.testing import TopologyTestDriver


def words_app(partitions: int = 1) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("win")
    words = app.topic("words", key_type=str, value_type=str, partitions=partitions)
    out = app.topic("out", key_type=str, value_type=str, partitions=1)
    return app, words, out


def label(w: Windowed, value: Any) -> tuple[str, str]:
    """A windowed result as `(key, "start-end:value")`, readable in assertions."""
    return w.key, f"{w.start_ms}-{w.end_ms}:{value}"


def dropped(app: sk.App, table: sk.KTable, reason: str) -> float:
    return app.metrics.value("dropped_records", node=table.node.name, reason=reason)


# Window definitions -----------------------------------------------------------------------


def test_window_definitions_take_seconds_or_timedeltas_and_are_checked() -> None:
    hopping = TimeWindows(timedelta(minutes=1), advance=15, grace=0.5)
    assert (hopping.size_ms, hopping.advance_ms, hopping.grace_ms) == (60_000, 15_000, 500)
    assert TimeWindows.of(10).advance_by(5).advance_ms == 5_000
    assert list(TimeWindows(10).starts_for(12_345)) == [10_000]
    assert list(TimeWindows(10, advance=5).starts_for(12_345)) == [5_000, 10_000]
    assert list(TimeWindows(10, advance=5).starts_for(3_000)) == [0]
    assert SlidingWindows.of(2, grace=1).time_difference_ms == 2_000
    assert SessionWindows.of(timedelta(seconds=30)).gap_ms == 30_000
    for bad, match in [
        (lambda: TimeWindows(0), "size"),
        (lambda: TimeWindows(10, advance=11), "advance"),
        (lambda: TimeWindows(10, grace=-1), "grace"),
        (lambda: SlidingWindows(-1), "time_difference"),
        (lambda: SessionWindows(0), "inactivity_gap"),
    ]:
        with pytest.raises(sk.ConfigError, match=match):
            bad()


@given(
    st.lists(
        st.tuples(st.text(max_size=4), st.integers(0, 2**40), st.integers(0, 2**40)),
        min_size=1,
        max_size=20,
    ),
    st.integers(-(2**40), 2**40),
)
def test_session_keys_sort_by_end_and_values_keep_their_timestamp(
    spans: list[tuple[str, int, int]], ts: int
) -> None:
    keys = SessionKeySerde(StrSerde())
    sessions = [Windowed(k, min(a, b), max(a, b)) for k, a, b in spans]
    for session in sessions:
        assert keys.deserialize(keys.serialize(session)) == session
    # One key's sessions sort by end in byte order: the sessions a record may join are
    # a range scan from the earliest end that can reach it.
    one = sorted({(s.end_ms, s.start_ms) for s in sessions})
    ordered = sorted(one, key=lambda es: keys.serialize((spans[0][0], es[1], es[0])) or b"")
    assert ordered == one
    values = TimestampedSerde(StrSerde())
    assert values.deserialize(values.serialize(ValueAndTimestamp("v", ts))) == ("v", ts)


def test_aggregation_options_are_checked() -> None:
    app, words, _ = words_app()
    undeclared = sk.Topic("nowhere", key_type=str, value_type=str)
    grouped = app.stream(words).group_by_key()
    with pytest.raises(sk.ConfigError, match="windowed_by"):
        grouped.windowed_by(10)  # type: ignore[arg-type]
    windowed = grouped.windowed_by(TimeWindows(10))
    with pytest.raises(sk.ConfigError, match="emit"):
        windowed.count(emit="eventually")  # type: ignore[arg-type]
    with pytest.raises(sk.ConfigError, match="nowhere"):
        windowed.count(late_topic=undeclared)
    with pytest.raises(sk.ConfigError, match="close_idle_after"):
        windowed.count(emit="final", close_idle_after=0)


# Time windows ---------------------------------------------------------------------------


def test_tumbling_count_updates_each_window_and_fills_the_store() -> None:
    app, words, out = words_app()
    # Kept two windows' time past their start (Kafka's Materialized.withRetention):
    # by default a window leaves the store once it closes.
    windowed = app.stream(words).group_by_key().windowed_by(TimeWindows(60))
    counts = windowed.count(name="c", retention=120)
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        for key, ts in [("a", 0), ("a", 59_999), ("b", 30_000), ("a", 60_000), ("a", 61_000)]:
            driver.pipe(words, key, "x", timestamp_ms=ts)
        assert driver.read_output(out) == [
            ("a", "0-60000:1"),
            ("a", "0-60000:2"),
            ("b", "0-60000:1"),
            ("a", "60000-120000:1"),
            ("a", "60000-120000:2"),
        ]
        store = driver.store("c")
    assert store == {
        Windowed("a", 0, 60_000): 2,
        Windowed("a", 60_000, 120_000): 2,
        Windowed("b", 0, 60_000): 1,
    }
    assert all(isinstance(k, Windowed) for k in store)


def test_hopping_count_puts_a_record_in_every_window_it_falls_in() -> None:
    app, words, out = words_app()
    windows = TimeWindows(10, advance=5)
    app.stream(words).group_by_key().windowed_by(windows).count(name="c").to_stream().map(label).to(
        out
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=7_000)
        assert driver.read_output(out) == [("a", "0-10000:1"), ("a", "5000-15000:1")]
        driver.pipe(words, "a", "x", timestamp_ms=12_000)
        assert driver.read_output(out) == [("a", "5000-15000:2"), ("a", "10000-20000:1")]
        # [0 s, 10 s) closed at 10 s: it leaves the store, as Kafka Streams' window
        # store shows it (retention: size plus grace, from the latest window start).
        assert driver.store("c") == {
            Windowed("a", 5_000, 15_000): 2,
            Windowed("a", 10_000, 20_000): 1,
        }


def test_reduce_and_aggregate_per_window_after_a_regrouping() -> None:
    app = sk.App("sums")
    sales = app.topic("sales", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=str, partitions=1)
    by_shop = app.stream(sales).group_by(lambda k, _v: k.split("/")[0]).windowed_by(TimeWindows(10))
    by_shop.reduce(lambda a, b: a + b, name="total").to_stream().map(label).to(out)
    by_shop.aggregate(list, lambda _k, v, agg: [*agg, v], name="all")
    with TopologyTestDriver(app) as driver:
        driver.pipe(sales, "s1/alice", 5, timestamp_ms=1_000)
        driver.pipe(sales, "s1/bob", 7, timestamp_ms=2_000)
        driver.pipe(sales, "s1/bob", 1, timestamp_ms=12_000)
        assert driver.read_output(out) == [
            ("s1", "0-10000:5"),
            ("s1", "0-10000:12"),
            ("s1", "10000-20000:1"),
        ]
        assert driver.store("all") == {Windowed("s1", 10_000, 20_000): [1]}  # [0, 10 s) closed


def test_the_page_view_example_emits_each_window_once() -> None:
    app = sk.App("pageviews")
    views = app.topic("views", key_type=str, value_type=dict, partitions=2)
    per_page = app.topic("per-page", key_type=str, value_type=dict, partitions=1)
    (
        app.stream(views)
        .group_by(lambda _k, v: v["page"])
        .windowed_by(TimeWindows(size=60, grace=10))
        .count(name="page-views", emit="final")
        .to_stream()
        .map(lambda w, n: (w.key, {"start": w.start_ms, "views": n}))
        .to(per_page)
    )
    with TopologyTestDriver(app) as driver:
        for user, page, ts in [("u1", "/", 1_000), ("u2", "/", 5_000), ("u1", "/cart", 61_000)]:
            driver.pipe(views, user, {"page": page}, timestamp_ms=ts)
        assert driver.read_output(per_page) == []  # no window has closed yet
        driver.advance_wall_clock(80)  # the input stays idle: windows close on the clock
        assert sorted(driver.read_output(per_page), key=str) == [
            ("/", {"start": 0, "views": 2}),
            ("/cart", {"start": 60_000, "views": 1}),
        ]
        driver.advance_wall_clock(600)
        assert driver.read_output(per_page) == []


# Grace and late records -----------------------------------------------------------------


def test_grace_keeps_a_window_open_then_late_records_are_dropped_and_counted() -> None:
    app, words, out = words_app()
    grouped = app.stream(words).group_by_key()
    counts = grouped.windowed_by(TimeWindows(10, grace=2)).count(name="c")
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=5_000)
        driver.pipe(words, "b", "x", timestamp_ms=11_999)  # stream time 11.999 s
        driver.pipe(words, "a", "x", timestamp_ms=9_000)  # [0, 10) closes at 12 s: on time
        driver.pipe(words, "b", "x", timestamp_ms=12_000)  # stream time 12 s: now closed
        driver.pipe(words, "a", "x", timestamp_ms=9_500)  # late
        assert driver.read_output(out) == [
            ("a", "0-10000:1"),
            ("b", "10000-20000:1"),
            ("a", "0-10000:2"),
            ("b", "10000-20000:2"),
        ]
        assert driver.store("c")[Windowed("a", 0, 10_000)] == 2
    assert dropped(app, counts, "late") == 1


def test_late_records_go_unchanged_to_the_late_topic_and_are_counted() -> None:
    app, words, out = words_app()
    late = app.topic("late-words", key_type=str, value_type=str, partitions=1)
    counts = (
        app.stream(words)
        .group_by_key()
        .windowed_by(TimeWindows(10))
        .count(name="c", late_topic=late)
    )
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "on time", timestamp_ms=25_000)
        driver.pipe(words, "a", "too late", timestamp_ms=3_000, headers=(("h", b"1"),))
        got = [(r.key, r.value, r.timestamp, r.headers) for r in driver.read_records(late)]
        assert got == [("a", "too late", 3_000, (("h", b"1"),))]
        assert driver.read_output(out) == [("a", "20000-30000:1")]
        assert driver.store("c") == {Windowed("a", 20_000, 30_000): 1}
    assert dropped(app, counts, "late") == 1


def test_a_record_late_for_some_hopping_windows_updates_the_others() -> None:
    app, words, out = words_app()
    counts = app.stream(words).group_by_key().windowed_by(TimeWindows(10, advance=5)).count()
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "b", "x", timestamp_ms=10_000)  # [0, 10) is closed
        driver.read_output(out)
        driver.pipe(words, "a", "x", timestamp_ms=7_000)  # in [0, 10) and [5, 15)
        assert driver.read_output(out) == [("a", "5000-15000:1")]
    assert dropped(app, counts, "late for some windows") == 1
    assert dropped(app, counts, "late") == 0


def test_null_keys_and_values_are_dropped_and_counted() -> None:
    app, words, _ = words_app()
    counts = app.stream(words).group_by_key().windowed_by(TimeWindows(10)).count(name="c")
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, None, "x", timestamp_ms=1_000)
        driver.pipe(words, "a", None, timestamp_ms=1_000)
        assert driver.store("c") == {}
    assert dropped(app, counts, "null key") == 1
    assert dropped(app, counts, "null value") == 1


def test_timestamp_extractor_drives_the_windows() -> None:
    app = sk.App("extracted")
    events = app.topic("events", key_type=str, value_type=dict, partitions=2)
    out = app.topic("out", key_type=str, value_type=str, partitions=1)
    stream = app.stream(events, timestamp_extractor=lambda r: r.value["at"])
    counts = stream.group_by(lambda _k, v: v["user"]).windowed_by(TimeWindows(10)).count()
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        # Every record's own timestamp is 0; event time is in the value.
        for at in (1_000, 15_000, 16_000):
            driver.pipe(events, "k", {"user": "ann", "at": at}, timestamp_ms=0)
        assert driver.read_output(out) == [
            ("ann", "0-10000:1"),
            ("ann", "10000-20000:1"),
            ("ann", "10000-20000:2"),
        ]


# Emit final -------------------------------------------------------------------------------


def test_emit_final_emits_each_window_once_when_it_closes() -> None:
    app, words, out = words_app()
    windows = TimeWindows(10, grace=1)
    counts = app.stream(words).group_by_key().windowed_by(windows).count(name="c", emit="final")
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        for ts in (1_000, 2_000, 9_999):
            driver.pipe(words, "a", "x", timestamp_ms=ts)
        driver.pipe(words, "b", "x", timestamp_ms=10_999)  # [0, 10) closes at 11 s
        assert driver.read_output(out) == []
        assert driver.store("c")[Windowed("a", 0, 10_000)] == 3  # the store has it all along
        driver.pipe(words, "b", "x", timestamp_ms=11_000)
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [("a", "0-10000:3", 9_999)]
        driver.pipe(words, "a", "x", timestamp_ms=5_000)  # late: the window was emitted
        driver.pipe(words, "b", "x", timestamp_ms=30_000)
        assert driver.read_output(out) == [("b", "10000-20000:2")]
        pending = driver.timestamped_store("c-suppress")
        assert pending == {Windowed("b", 30_000, 40_000): (1, 30_000)}
    assert dropped(app, counts, "late") == 1


def test_wall_clock_closes_windows_of_idle_input() -> None:
    app, words, out = words_app()
    counts = (
        app.stream(words)
        .group_by_key()
        .windowed_by(TimeWindows(10, grace=2))
        .count(name="c", emit="final", close_idle_after=1)
    )
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=4_000)
        driver.advance_wall_clock(5)  # stream time taken as 9 s: [0, 10) closes at 12 s
        assert driver.read_output(out) == []
        driver.advance_wall_clock(3)  # 12 s
        assert driver.read_output(out) == [("a", "0-10000:1")]
        driver.pipe(words, "a", "x", timestamp_ms=6_000)  # late: behind the clock's time
        driver.pipe(words, "a", "x", timestamp_ms=13_000)  # on time: [10, 20)
        driver.advance_wall_clock(30)
        assert driver.read_output(out) == [("a", "10000-20000:1")]
    assert dropped(app, counts, "late") == 1


def test_without_close_idle_after_windows_wait_for_stream_time() -> None:
    app, words, out = words_app()
    counts = (
        app.stream(words)
        .group_by_key()
        .windowed_by(TimeWindows(10))
        .count(emit="final", close_idle_after=None)
    )
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=4_000)
        driver.advance_wall_clock(3_600)
        assert driver.read_output(out) == []  # Kafka Streams' behaviour
        driver.pipe(words, "a", "x", timestamp_ms=10_000)
        assert driver.read_output(out) == [("a", "0-10000:1")]


# Sliding windows ----------------------------------------------------------------------------


def test_sliding_windows_hold_each_distinct_set_of_nearby_records() -> None:
    app, words, out = words_app()
    sums = (
        app.stream(words)
        .group_by_key()
        .windowed_by(SlidingWindows(10, grace=100))
        .reduce(lambda a, b: a + b, name="s")
    )
    sums.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "k", "a", timestamp_ms=20_000)
        driver.pipe(words, "k", "b", timestamp_ms=25_000)
        driver.pipe(words, "k", "c", timestamp_ms=40_000)
        assert driver.read_output(out) == [
            ("k", "10000-20000:a"),  # a's left window
            ("k", "20001-30001:b"),  # a's right window, opened by b
            ("k", "15000-25000:ab"),  # b's left window
            ("k", "30000-40000:c"),  # c's left window: a and b are too far
        ]
        driver.pipe(words, "k", "d", timestamp_ms=22_000)  # out of order, within grace
        assert driver.read_output(out) == [
            ("k", "15000-25000:abd"),
            ("k", "20001-30001:bd"),
            ("k", "12000-22000:ad"),  # d's left window
            ("k", "22001-32001:b"),  # d's right window: b alone
        ]
        values = {w: v.value for w, v in driver.timestamped_store("s").items()}
    assert values == {
        Windowed("k", 10_000, 20_000): "a",
        Windowed("k", 12_000, 22_000): "ad",
        Windowed("k", 15_000, 25_000): "abd",
        Windowed("k", 20_001, 30_001): "bd",
        Windowed("k", 22_001, 32_001): "b",
        Windowed("k", 30_000, 40_000): "c",
    }


def sliding_model(timestamps: list[int], d: int) -> dict[tuple[int, int], int]:
    """Kafka's sliding windows by brute force: each record's left window ([0, d] for
    records before d) and, when a later record is within reach, its right window."""
    windows: set[tuple[int, int]] = set()
    for t in timestamps:
        windows.add((t - d, t) if t >= d else (0, d))
        if any(t < q <= t + 1 + d for q in timestamps):
            windows.add((t + 1, t + 1 + d))
    return {(s, e): sum(s <= q <= e for q in timestamps) for s, e in windows}


@pytest.mark.parametrize("seed", range(8))
def test_sliding_window_counts_match_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    d = 1_000
    timestamps = [rng.randrange(0, 6_000, 250) for _ in range(rng.randrange(3, 15))]
    app, words, _ = words_app()
    app.stream(words).group_by_key().windowed_by(SlidingWindows(1, grace=60)).count(name="n")
    with TopologyTestDriver(app) as driver:
        for ts in timestamps:
            driver.pipe(words, "k", "x", timestamp_ms=ts)
        got = {(w.start_ms, w.end_ms): v.value for w, v in driver.timestamped_store("n").items()}
    assert got == sliding_model(timestamps, d), timestamps


def test_sliding_windows_emit_final_in_closing_order_and_drop_late_records() -> None:
    app, words, out = words_app()
    counts = (
        app.stream(words)
        .group_by_key()
        .windowed_by(SlidingWindows(10, grace=5))
        .count(name="n", emit="final", close_idle_after=None)
    )
    counts.to_stream().map(label).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "k", "x", timestamp_ms=20_000)
        driver.pipe(words, "k", "x", timestamp_ms=25_000)
        assert driver.read_output(out) == []
        driver.pipe(words, "z", "x", timestamp_ms=25_001)  # [10, 20] closes at 25.001 s
        assert driver.read_output(out) == [("k", "10000-20000:1")]
        driver.pipe(words, "z", "x", timestamp_ms=40_000)
        assert driver.read_output(out) == [
            ("k", "15000-25000:2"),  # closes at 30.001 s
            ("z", "15001-25001:1"),  # 30.002 s
            ("k", "20001-30001:1"),  # 35.002 s
        ]
        driver.pipe(words, "k", "x", timestamp_ms=24_000)  # its windows end by 34 s: late
        driver.pipe(words, "z", "x", timestamp_ms=60_000)
        assert driver.read_output(out) == [("z", "30000-40000:1")]
    assert dropped(app, counts, "late") == 1


# Session windows ----------------------------------------------------------------------------


def sessions_app(**options: Any) -> tuple[sk.App, sk.Topic, sk.Topic, sk.KTable]:
    app, words, out = words_app()
    sessions = (
        app.stream(words)
        .group_by_key()
        .windowed_by(SessionWindows(5, grace=options.pop("grace", 0)))
        .count(name="s", **options)
    )
    sessions.to_stream().map(label).to(out)
    return app, words, out, sessions


def test_sessions_merge_and_retract_the_merged_sessions() -> None:
    app, words, out, _ = sessions_app(grace=30)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=1_000)
        driver.pipe(words, "a", "x", timestamp_ms=3_000)  # within the gap: extends it
        driver.pipe(words, "a", "x", timestamp_ms=10_000)  # 7 s later: a new session
        assert driver.read_output(out) == [
            ("a", "1000-1000:1"),
            ("a", "1000-1000:None"),  # extended: the old session key is retracted
            ("a", "1000-3000:2"),
            ("a", "10000-10000:1"),
        ]
        driver.pipe(words, "a", "x", timestamp_ms=6_000)  # bridges both sessions
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [
            ("a", "1000-3000:None", 3_000),
            ("a", "10000-10000:None", 10_000),
            ("a", "1000-10000:4", 10_000),
        ]
        # Inside the session: retracted and emitted anew, as Kafka Streams does.
        driver.pipe(words, "a", "x", timestamp_ms=8_000)
        assert driver.read_output(out) == [("a", "1000-10000:None"), ("a", "1000-10000:5")]
        assert driver.store("s") == {Windowed("a", 1_000, 10_000): 5}


def test_session_aggregate_with_a_merger_and_session_reduce() -> None:
    app = sk.App("carts")
    items = app.topic("items", key_type=str, value_type=str, partitions=1)
    grouped = app.stream(items).group_by_key().windowed_by(SessionWindows(60))
    grouped.aggregate(
        set,
        lambda _k, item, cart: cart | {item},
        merger=lambda _k, a, b: a | b,
        name="carts",
    )
    grouped.reduce(lambda a, b: f"{a},{b}", name="trail")
    with TopologyTestDriver(app) as driver:
        for item, ts in [("tea", 0), ("jam", 100_000), ("tea", 50_000), ("bun", 200_000)]:
            driver.pipe(items, "ann", item, timestamp_ms=ts)
        assert driver.store("carts") == {
            Windowed("ann", 0, 100_000): {"tea", "jam"},
            Windowed("ann", 200_000, 200_000): {"bun"},
        }
        assert driver.store("trail") == {
            Windowed("ann", 0, 100_000): "tea,jam,tea",
            Windowed("ann", 200_000, 200_000): "bun",
        }
        # Sessions are kept two gaps and the grace past their end, then forgotten.
        driver.pipe(items, "ann", "pie", timestamp_ms=300_000)
        assert Windowed("ann", 0, 100_000) not in driver.store("carts")


def test_a_session_closes_a_gap_and_the_grace_after_its_end() -> None:
    app, words, out, sessions = sessions_app(grace=2)
    with TopologyTestDriver(app) as driver:
        driver.pipe(words, "a", "x", timestamp_ms=10_000)
        driver.pipe(words, "b", "x", timestamp_ms=17_000)  # = a's end + gap + grace: open
        driver.pipe(words, "a", "x", timestamp_ms=5_000)  # merges: on time
        driver.pipe(words, "b", "x", timestamp_ms=17_001)  # a's session has closed
        driver.pipe(words, "a", "x", timestamp_ms=7_000)  # inside a's closed session: late
        driver.pipe(words, "a", "x", timestamp_ms=1_000)  # alone, closed at 8.001 s: late
        assert driver.read_output(out) == [
            ("a", "10000-10000:1"),
            ("b", "17000-17000:1"),
            ("a", "10000-10000:None"),
            ("a", "5000-10000:2"),
            ("b", "17000-17000:None"),
            ("b", "17000-17001:2"),
        ]
        assert driver.store("s") == {
            Windowed("a", 5_000, 10_000): 2,
            Windowed("b", 17_000, 17_001): 2,
        }
    assert dropped(app, sessions, "late") == 2


def test_emit_final_sessions_emit_only_the_merged_result() -> None:
    app, words, out, _ = sessions_app(grace=10, emit="final", close_idle_after=None)
    with TopologyTestDriver(app) as driver:
        for ts in (1_000, 10_000, 6_000):  # two sessions, then a bridge
            driver.pipe(words, "a", "x", timestamp_ms=ts)
        driver.pipe(words, "b", "x", timestamp_ms=25_000)  # = end + gap + grace
        assert driver.read_output(out) == []
        driver.pipe(words, "b", "x", timestamp_ms=25_001)
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [("a", "1000-10000:3", 10_000)]
        pending = driver.timestamped_store("s-suppress")
        assert pending == {Windowed("b", 25_000, 25_001): (2, 25_001)}


# Restart and idle closing in a memory-broker worker -----------------------------------------


def worker_app(
    url: str, data_dir: Path, guarantee: str = "at_least_once", **options: Any
) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App(
        "winworker",
        broker=url,
        data_dir=data_dir,
        commit_interval_s=0.05,
        processing_guarantee=guarantee,
    )
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=2)
    updates = app.topic("updates", key_type=str, value_type=str, partitions=1)
    finals = app.topic("finals", key_type=str, value_type=str, partitions=1)
    grouped = app.stream(clicks).group_by_key()
    windows = options.pop("windows", TimeWindows(10, grace=1))
    grouped.windowed_by(windows).count(name="live").to_stream().map(label).to(updates)
    final = grouped.windowed_by(windows).count(name="final", emit="final", **options)
    final.to_stream().map(label).to(finals)
    return app, clicks, updates, finals


def remove_window_state(data_dir: Path) -> int:
    files = [*data_dir.glob("winworker/*/live.sqlite*"), *data_dir.glob("winworker/*/final*")]
    for path in files:
        path.unlink()
    return len(files)


async def test_window_state_and_pending_finals_are_restored_from_the_changelogs(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks, updates, _ = worker_app(memory_url, tmp_path, close_idle_after=None)
    async with running(app):
        await app.send(clicks, key="a", value="x", timestamp_ms=1_000)
        await app.send(clicks, key="a", value="x", timestamp_ms=2_000)
        await wait_for(lambda: ("a", "0-10000:2") in read(app, updates), what="counts")
        await wait_for(
            lambda: sum(n or 0 for n in committed(app, clicks).values()) == 2, what="commit"
        )
    assert remove_window_state(tmp_path) > 0  # only the changelogs remain
    app2, clicks2, updates2, finals2 = worker_app(memory_url, tmp_path, close_idle_after=None)
    async with running(app2):
        await app2.send(clicks2, key="a", value="x", timestamp_ms=3_000)
        await wait_for(lambda: ("a", "0-10000:3") in read(app2, updates2), what="restored count")
        assert read(app2, finals2) == []
        await app2.send(clicks2, key="a", value="x", timestamp_ms=20_000)  # closes [0, 10)
        await wait_for(lambda: read(app2, finals2) != [], what="the final result")
        await app2.send(clicks2, key="a", value="x", timestamp_ms=40_000)
        await wait_for(lambda: len(read(app2, finals2)) == 2, what="the next final result")
    assert read(app2, finals2) == [("a", "0-10000:3"), ("a", "20000-30000:1")]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_windows_past_their_retention_at_a_commit_reach_the_changelog_not_the_file(
    memory_url: str, tmp_path: Path, guarantee: str
) -> None:
    """A replay moves stream time far within one commit interval: the windows it left
    behind are expired before they are written. As Kafka Streams' window stores skip
    expired segments, the file is spared them; their changelog records still go out."""
    app, clicks, updates, _ = worker_app(memory_url, tmp_path, guarantee, close_idle_after=None)
    # Sent before the worker starts: one fetch, one batch, one commit.
    for ts in (1_000, 2_000, 100_000):
        await app.send(clicks, key="a", value="x", timestamp_ms=ts)
    async with running(app):
        await wait_for(lambda: len(read(app, updates)) == 3, what="counts")
        await wait_for(
            lambda: sum(n or 0 for n in committed(app, clicks).values()) == 3, what="commit"
        )
    assert read(app, updates) == [("a", "0-10000:1"), ("a", "0-10000:2"), ("a", "100000-110000:1")]
    changelog = sk.MemoryBroker.for_url(memory_url).records("winworker-live-changelog")
    key_serde = app.tables["live"].changelog.key_serde
    assert {key_serde.deserialize(r.key) for r in changelog} == {
        Windowed("a", 0, 10_000),
        Windowed("a", 100_000, 110_000),
    }
    # Retention 11 s: at stream time 100 s the first window had expired.
    assert table_in_files(tmp_path, app, "live") == {
        Windowed("a", 100_000, 110_000): ValueAndTimestamp(1, 100_000)
    }


async def test_idle_windows_close_on_the_wall_clock_in_a_worker(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks, _, finals = worker_app(
        memory_url, tmp_path, windows=TimeWindows(0.1), close_idle_after=0.02
    )
    async with running(app):
        await app.send(clicks, key="a", value="x", timestamp_ms=1_000)
        await app.send(clicks, key="b", value="x", timestamp_ms=1_050)
        # No more input: the windows close as wall-clock time passes.
        await wait_for(lambda: len(read(app, finals)) == 2, what="final results without input")
    assert sorted(read(app, finals)) == [("a", "1000-1100:1"), ("b", "1000-1100:1")]


def test_a_window_store_keeps_closed_windows_for_the_retention_asked() -> None:
    """Kafka's Materialized.withRetention: at least the size plus the grace (refused
    otherwise); a window stays while its start is within the retention of the latest
    window start."""
    app, words, _ = words_app()
    windowed = app.stream(words).group_by_key().windowed_by(TimeWindows(10, grace=5))
    with pytest.raises(sk.ConfigError, match="at least the windows' size plus their grace"):
        windowed.count(name="short", retention=14)
    windowed.count(name="c", retention=30)
    with TopologyTestDriver(app) as driver:
        for ts in (1_000, 12_000, 25_000, 40_000):
            driver.pipe(words, "a", "x", timestamp_ms=ts)
        # Latest start 40 s: starts after 10 s stay.
        assert sorted(w.start_ms for w in driver.store("c")) == [20_000, 40_000]
        driver.pipe(words, "a", "x", timestamp_ms=50_000)
        assert sorted(w.start_ms for w in driver.store("c")) == [40_000, 50_000]
