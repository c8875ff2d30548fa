"""The Processor API: user `Processor` subclasses added with `stream.process(...)`.

Through the test kit: the lifecycle (one instance per task, init / process / close),
what the context tells about the record in hand, forwarding to every child or to
one by name, stores, stream-time and wall-clock punctuations, and routing records
to a topic chosen per record. In a memory-broker worker: wall-clock punctuations
fire with no input at all, and `context.commit()` commits before the interval.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, read, running, wait_for

import streamkit as sk
from streamkit.errors import AgentError, ConfigError, StreamkitError
from streamkit.partitioner import partition_for
from streamkit.testing import TopologyTestDriver

# Lifecycle and the context -----------------------------------------------------------


class Recorder(sk.Processor):
    """Notes every call, and what the context says about the record in hand."""

    calls: list[tuple[Any, ...]]

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.calls.append(("init", context.task_id, context.partition, context.app_id))

    def process(self, record: sk.Record) -> None:
        c = self.context
        self.calls.append(("process", c.task_id, c.topic, c.partition, c.offset, record.key))
        self.context.forward(record.with_value(f"{record.value}@{c.stream_time_ms}"))

    def close(self) -> None:
        self.calls.append(("close", self.context.task_id))


def test_one_processor_per_task_is_initialised_fed_and_closed() -> None:
    app = sk.App("life")
    src = app.topic("in", key_type=str, value_type=str, partitions=3)
    out = app.topic("out", key_type=str, value_type=str, partitions=3)
    calls: list[tuple[Any, ...]] = []
    app.stream(src).process(lambda: Recorder(calls)).to(out)

    with TopologyTestDriver(app) as driver:
        assert sorted(c for c in calls if c[0] == "init") == [
            ("init", f"0_{p}", p, "life") for p in range(3)
        ]
        driver.pipe(src, "a", "x", timestamp_ms=100)
        driver.pipe(src, "a", "y", timestamp_ms=50)  # earlier: stream time stays at 100
        driver.pipe(src, "b", "z", timestamp_ms=300)
        assert not [c for c in calls if c[0] == "close"]
        assert driver.read_output(out) == [
            ("a", "x@100"),
            ("a", "y@100"),
            ("b", "z@300"),
        ]
    pa, pb = partition_for(b"a", 3), partition_for(b"b", 3)
    processed = [c for c in calls if c[0] == "process"]
    assert processed == [
        ("process", f"0_{pa}", "in", pa, 0, "a"),
        ("process", f"0_{pa}", "in", pa, 1, "a"),
        ("process", f"0_{pb}", "in", pb, 2 if pa == pb else 0, "b"),
    ]
    # Closed once per task when the driver closes, after everything else.
    assert sorted(c for c in calls if c[0] == "close") == [("close", f"0_{p}") for p in range(3)]
    assert [c[0] for c in calls[-3:]] == ["close"] * 3


def test_process_refuses_a_store_of_another_app() -> None:
    app = sk.App("a")
    src = app.topic("in", key_type=str, value_type=str)
    foreign = sk.App("b").table("t")
    with pytest.raises(ConfigError, match="store 't' was not declared"):
        app.stream(src).process(lambda: Recorder([]), stores=[foreign])


# forward --------------------------------------------------------------------------------


class Splitter(sk.Processor):
    """Numbers go to the child named "numbers", words to "words", "both" to every child."""

    def process(self, record: sk.Record) -> None:
        if record.value == "both":
            self.context.forward(record)
        elif record.value.isdigit():
            self.context.forward(record.with_value(int(record.value)), to="numbers")
        else:
            self.context.forward(record, to="words")


def test_forward_reaches_every_child_or_the_named_one() -> None:
    app = sk.App("fwd")
    src = app.topic("in", key_type=str, value_type=str, partitions=2)
    numbers = app.topic("numbers", key_type=str, value_type=Any, partitions=2)
    words = app.topic("words", key_type=str, value_type=str, partitions=2)
    split = app.stream(src).process(Splitter)
    split.to(numbers, name="numbers")
    split.map_values(str.upper, name="words").to(words)

    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("k", "12"), ("k", "abc"), ("k", "both"), ("k", "7")])
        assert driver.read_output(numbers) == [("k", 12), ("k", "both"), ("k", 7)]
        assert driver.read_output(words) == [("k", "ABC"), ("k", "BOTH")]


def test_forward_to_an_unknown_child_fails_the_record_listing_the_children() -> None:
    app = sk.App("fwd")
    src = app.topic("in", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=str)
    app.stream(src).process(Splitter, name="splitter").to(out, name="only-child")
    with TopologyTestDriver(app) as driver, pytest.raises(AgentError) as failure:
        driver.pipe(src, "k", "abc")
    message = str(failure.value)
    assert "'splitter' has no child named 'words'" in message
    assert "'only-child'" in message


# Stores -------------------------------------------------------------------------------


class Deduplicate(sk.Processor):
    """Forwards a record only the first time its key is seen; remembers keys in a store."""

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.seen = context.store("seen")

    def process(self, record: sk.Record) -> None:
        if record.key in self.seen:
            self.seen[record.key] += 1
            return
        self.seen[record.key] = 1
        self.context.forward(record)


def test_a_processor_reads_and_writes_its_connected_store() -> None:
    app = sk.App("dedup")
    src = app.topic("in", key_type=str, value_type=str, partitions=2)
    out = app.topic("out", key_type=str, value_type=str, partitions=2)
    seen = app.table("seen", key_type=str, value_type=int)
    app.stream(src).process(Deduplicate, stores=[seen]).to(out)

    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4"), ("c", "5")])
        assert driver.read_output(out) == [("a", "1"), ("b", "2"), ("c", "5")]
        assert driver.store("seen") == {"a": 3, "b": 1, "c": 1}
        # Backed by a changelog like any table: each task committed its changes.
        changelog = driver.read_output("dedup-seen-changelog")
    assert dict(changelog) == {"a": 3, "b": 1, "c": 1}


def test_a_store_that_was_not_connected_is_refused_naming_it() -> None:
    app = sk.App("dedup")
    src = app.topic("in", key_type=str, value_type=str)
    app.table("seen", key_type=str, value_type=int)
    app.stream(src).process(Deduplicate, name="dedup")  # stores=[...] forgotten
    with pytest.raises(ConfigError) as refused:
        TopologyTestDriver(app)
    assert "'dedup' is not connected to store 'seen'" in str(refused.value)
    assert "stores=[...]" in str(refused.value)


# Punctuations -------------------------------------------------------------------------


class Ticker(sk.Processor):
    """Counts records; every `interval_s` of `kind` time forwards the count so far."""

    def __init__(self, interval_s: float, kind: sk.PunctuationType) -> None:
        self.interval_s = interval_s
        self.kind = kind
        self.count = 0
        self.during_punctuation: list[tuple[str | None, int | None]] = []

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.handle = context.schedule(self.interval_s, self.kind, self.tick)

    def process(self, record: sk.Record) -> None:
        self.count += 1
        if record.value == "stop":
            self.handle.cancel()

    def tick(self, now_ms: int) -> None:
        self.during_punctuation.append((self.context.topic, self.context.offset))
        self.context.forward(sk.Record("ticks", self.count, now_ms))


def ticker_app(kind: sk.PunctuationType) -> tuple[sk.App, sk.Topic, sk.Topic, list[Ticker]]:
    app = sk.App("ticks")
    src = app.topic("in", key_type=str, value_type=str, partitions=1)
    out = app.topic("ticks", key_type=str, value_type=int, partitions=1)
    made: list[Ticker] = []

    def make() -> Ticker:
        made.append(Ticker(10, kind))
        return made[-1]

    app.stream(src).process(make).to(out)
    return app, src, out, made


def test_stream_time_punctuation_fires_as_record_timestamps_pass_each_interval() -> None:
    """Kafka Streams aligns stream-time punctuations to 0: the first fires with the
    first record, the next at each multiple of the interval that stream time reaches,
    once however many it passed (TopologyTestDriverTest.shouldPunctuateOnStreamsTime)."""
    app, src, out, made = ticker_app(sk.STREAM_TIME)
    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "k", "a", timestamp_ms=1_000)  # the first data: fires, due next at 10 s
        assert [(r.value, r.timestamp) for r in driver.read_records(out)] == [(1, 1_000)]
        driver.pipe(src, "k", "b", timestamp_ms=9_000)
        driver.advance_wall_clock(3600)  # wall-clock time does not move stream time
        assert driver.read_records(out) == []
        driver.pipe(src, "k", "c", timestamp_ms=11_000)
        assert [(r.value, r.timestamp) for r in driver.read_records(out)] == [(3, 11_000)]
        driver.pipe(src, "k", "d", timestamp_ms=5_000)  # late: stream time stays at 11 s
        driver.pipe(src, "k", "e", timestamp_ms=48_000)  # three intervals later: fires once
        assert [(r.value, r.timestamp) for r in driver.read_records(out)] == [(5, 48_000)]
        driver.pipe(src, "k", "f", timestamp_ms=49_000)  # next due at 50 s
        assert driver.read_records(out) == []
        driver.pipe(src, "k", "stop", timestamp_ms=49_500)  # cancelled before it fires
        driver.pipe(src, "k", "g", timestamp_ms=90_000)
        assert driver.read_records(out) == []
    # Inside a punctuation there is no record in hand.
    assert made[0].during_punctuation == [(None, None)] * 3


def test_wall_clock_punctuation_fires_when_the_driver_advances_the_clock() -> None:
    app, src, out, _ = ticker_app(sk.WALL_CLOCK)
    with TopologyTestDriver(app, wall_clock_ms=0) as driver:
        driver.pipe(src, "k", "a", timestamp_ms=999_000)  # stream time does not matter
        assert driver.read_records(out) == []
        driver.advance_wall_clock(9.9)
        assert driver.read_records(out) == []
        driver.advance_wall_clock(0.1)
        assert [(r.value, r.timestamp) for r in driver.read_records(out)] == [(1, 10_000)]
        driver.pipe(src, "k", "b")
        driver.advance_wall_clock(35)  # several intervals at once: fires once, at 45 s
        assert [(r.value, r.timestamp) for r in driver.read_records(out)] == [(2, 45_000)]
        driver.advance_wall_clock(5)  # next due at 50 s
        assert [r.value for r in driver.read_records(out)] == [2]
        driver.pipe(src, "k", "stop")
        driver.advance_wall_clock(100)
        assert driver.read_records(out) == []


class Flaky(sk.Processor):
    """A punctuation that raises on its first call and forwards on the next ones."""

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.calls = 0
        context.schedule(1, sk.WALL_CLOCK, self.tick)

    def process(self, record: sk.Record) -> None:
        self.context.forward(record)

    def tick(self, now_ms: int) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("first tick fails")
        self.context.forward(sk.Record("tick", str(self.calls), now_ms))


def flaky_app(policy: str) -> tuple[sk.App, sk.Topic]:
    app = sk.App("flaky")
    src = app.topic("in", key_type=str, value_type=str, partitions=1)
    out = app.topic("out", key_type=str, value_type=str, partitions=1)
    app.stream(src, on_error=policy).process(Flaky, name="flaky").to(out)
    return app, out


def test_a_failing_punctuation_stops_the_task_under_fail_naming_the_node() -> None:
    app, _ = flaky_app("fail")
    with TopologyTestDriver(app) as driver, pytest.raises(StreamkitError) as failure:
        driver.advance_wall_clock(1)
    assert "punctuation of node 'flaky' raised RuntimeError: first tick fails" in str(failure.value)


def test_a_failing_punctuation_is_logged_and_runs_again_under_skip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, out = flaky_app("skip")
    with caplog.at_level(logging.ERROR), TopologyTestDriver(app) as driver:
        driver.advance_wall_clock(1)
        assert driver.read_records(out) == []
        driver.advance_wall_clock(1)
        assert driver.read_output(out) == [("tick", "2")]
    assert any("punctuation of node 'flaky' raised" in r.getMessage() for r in caplog.records)


# Routing to a topic chosen per record -----------------------------------------------


class Route(sk.Processor):
    """Alerts to the sink named "alerts", the rest to "normal"; a header says why."""

    def process(self, record: sk.Record) -> None:
        level = "alert" if record.value >= 100 else "normal"
        tagged = record.replace(headers=[*record.headers, ("level", level.encode())])
        self.context.forward(tagged, to="alerts" if level == "alert" else "normal")


def test_a_processor_routes_records_to_sinks_by_name() -> None:
    app = sk.App("route")
    readings = app.topic("readings", key_type=str, value_type=int, partitions=2)
    alerts = app.topic("alerts", key_type=str, value_type=int, partitions=2)
    normal = app.topic("normal", key_type=str, value_type=int, partitions=2)
    routed = app.stream(readings).process(Route)
    routed.to(alerts, name="alerts")
    routed.to(normal, name="normal")

    with TopologyTestDriver(app) as driver:
        driver.pipe_many(readings, [("s1", 20), ("s2", 150), ("s1", 101), ("s3", 7)])
        assert driver.read_output(alerts) == [("s2", 150), ("s1", 101)]
        normal_records = driver.read_records(normal)
    assert [(r.key, r.value) for r in normal_records] == [("s1", 20), ("s3", 7)]
    assert all(dict(r.headers)["level"] == b"normal" for r in normal_records)


class Tag(sk.Processor):
    def process(self, record: sk.Record) -> None:
        level = b"alert" if record.value >= 100 else b"normal"
        self.context.forward(record.replace(headers=[("level", level)]))


def test_records_go_to_the_topic_named_by_what_a_processor_put_on_them() -> None:
    app = sk.App("route")
    readings = app.topic("readings", key_type=str, value_type=int, partitions=2)
    alert = app.topic("alert-readings", key_type=str, value_type=int, partitions=2)
    normal = app.topic("normal-readings", key_type=str, value_type=int, partitions=2)
    (
        app.stream(readings)
        .process(Tag)
        .to(lambda k, v, record: f"{dict(record.headers)['level'].decode()}-readings")
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(readings, [("s1", 20), ("s2", 150), ("s3", 7)])
        assert driver.read_output(alert) == [("s2", 150)]
        assert driver.read_output(normal) == [("s1", 20), ("s3", 7)]


# In a worker (memory broker) -----------------------------------------------------------


class Totals(sk.Processor):
    """Sums values per key in a store; a wall-clock punctuation reports the totals."""

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.totals = context.store("totals")
        context.schedule(0.05, sk.WALL_CLOCK, self.report)

    def process(self, record: sk.Record) -> None:
        self.totals[record.key] = self.totals.get(record.key, 0) + record.value
        if record.value == 0:
            self.context.commit()

    def report(self, now_ms: int) -> None:
        for key, total in self.totals.items():
            self.context.forward(sk.Record(key, total, now_ms))


def totals_app(
    url: str, data_dir: Path, commit_interval_s: float
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("totals", broker=url, data_dir=data_dir, commit_interval_s=commit_interval_s)
    src = app.topic("amounts", key_type=str, value_type=int, partitions=2)
    out = app.topic("reports", key_type=str, value_type=int, partitions=2)
    totals = app.table("totals", key_type=str, value_type=int)
    app.stream(src).process(Totals, stores=[totals]).to(out)
    return app, src, out


async def test_wall_clock_punctuation_reports_in_a_worker_after_input_stops(
    memory_url: str, tmp_path: Path
) -> None:
    app, src, out = totals_app(memory_url, tmp_path, 0.05)
    async with running(app):
        for key, amount in [("a", 1), ("b", 2), ("a", 3)]:
            await app.send(src, key=key, value=amount)
        await wait_for(lambda: ("a", 4) in read(app, out), what="a's total reported")
        await wait_for(lambda: ("b", 2) in read(app, out), what="b's total reported")
        # No new input: the reports keep coming, unchanged.
        reported = len(read(app, out))
        await wait_for(lambda: len(read(app, out)) >= reported + 4, what="more reports")
    later = read(app, out)[reported:]
    assert set(later) == {("a", 4), ("b", 2)}


async def test_context_commit_commits_before_the_commit_interval(
    memory_url: str, tmp_path: Path
) -> None:
    app, src, out = totals_app(memory_url, tmp_path, 3600)
    p = partition_for(b"k", 2)
    async with running(app):
        await app.send(src, key="k", value=5)
        await app.send(src, key="k", value=6)
        await wait_for(lambda: ("k", 11) in read(app, out), what="both records processed")
        # Processed, but an hour-long commit interval has not passed: nothing committed.
        assert committed(app, src)[p] in (None, 0)
        await app.send(src, key="k", value=0)  # the processor asks for a commit
        await wait_for(lambda: committed(app, src)[p] == 3, what="the requested commit")


def test_TopologyTestDriverTest_shouldPunctuateOnStreamsTime() -> None:
    """Kafka's case, its milliseconds as seconds (the Ticker's interval is 10 s)."""
    app, src, out, _ = ticker_app(sk.STREAM_TIME)
    steps = [(42, True), (42, False), (51, True), (52, False), (61, True), (65, False)]
    steps += [(71, True), (72, False), (95, True), (101, True), (102, False)]
    with TopologyTestDriver(app) as driver:
        for ts, fires in steps:
            driver.pipe(src, "k", "v", timestamp_ms=ts * 1000)
            fired = [r.timestamp for r in driver.read_records(out)]
            assert fired == ([ts * 1000] if fires else []), ts
