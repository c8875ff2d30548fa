"""Kafka Streams conformance: the Processor API through the test driver.

Ported from org.apache.kafka.streams.processor.internals.ProcessorTopologyTest and
org.apache.kafka.streams.TopologyTestDriverTest (streams/test-utils): records,
timestamps and headers through processors, forwarding to named children, stores
read after processing, several sources and sinks, and TopologyTestDriverTest's
CustomMaxAggregator, whose punctuations flush a store. Kafka's Topology.addSource /
addProcessor / addSink become `app.stream(...).process(...)` and `.to(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance import records, string_topics

import streamkit as sk
from streamkit.testing import TopologyTestDriver

HEADERS = (("key", b"value"),)


class Forwarding(sk.Processor):
    """Kafka's ForwardingProcessor: every record to every child."""

    def process(self, record: sk.Record) -> None:
        self.context.forward(record)


class Later(sk.Processor):
    """Kafka's TimestampProcessor: forwards with the timestamp 10 ms later."""

    def process(self, record: sk.Record) -> None:
        self.context.forward(record.with_timestamp(record.timestamp + 10))


class FanOut(sk.Processor):
    """Kafka's FanOutTimestampProcessor: to all, to child1 +5, to child2, to all +2."""

    def process(self, record: sk.Record) -> None:
        self.context.forward(record)
        self.context.forward(record.with_timestamp(record.timestamp + 5), to="child1")
        self.context.forward(record, to="child2")
        self.context.forward(record.with_timestamp(record.timestamp + 2))


class AddHeader(sk.Processor):
    """Kafka's AddHeaderProcessor."""

    def process(self, record: sk.Record) -> None:
        self.context.forward(record.replace(headers=(*record.headers, *HEADERS)))


class Stateful(sk.Processor):
    """Kafka's StatefulProcessor: puts each record in its store, forwards nothing."""

    def __init__(self, store: str) -> None:
        self.store_name = store

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        self.store = context.store(self.store_name)

    def process(self, record: sk.Record) -> None:
        self.store[record.key] = record.value


def simple(processor: Callable[[], sk.Processor]) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("processor-topology")
    source, sink = string_topics(app, "input-topic-1", "output-topic-1")
    app.stream(source).process(processor).to(sink)
    return app, source, sink


def rows(driver: TopologyTestDriver, topic: sk.Topic) -> list[tuple[Any, Any, Any, int]]:
    return [(r.key, r.value, tuple(r.headers), r.timestamp) for r in driver.read_records(topic)]


def test_ProcessorTopologyTest_testDrivingSimpleTopology() -> None:
    app, source, sink = simple(Forwarding)
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "key1", "value1", timestamp_ms=0)
        assert records(driver, sink) == [("key1", "value1", 0)]
        driver.pipe(source, "key2", "value2", timestamp_ms=0)
        assert records(driver, sink) == [("key2", "value2", 0)]
        driver.pipe_many(source, [(f"key{i}", f"value{i}", 0) for i in (3, 4, 5)])
        assert records(driver, sink) == [(f"key{i}", f"value{i}", 0) for i in (3, 4, 5)]


def test_ProcessorTopologyTest_shouldConsiderTimeStamps_and_Headers() -> None:
    """shouldConsiderTimeStamps and shouldConsiderHeaders: both pass through as they came."""
    app, source, sink = simple(Forwarding)
    with TopologyTestDriver(app) as driver:
        for i in (1, 2, 3):
            driver.pipe(source, f"key{i}", f"value{i}", timestamp_ms=10 * i, headers=HEADERS)
        driver.pipe(source, "key4", "value4", timestamp_ms=40)
        assert rows(driver, sink) == [
            *[(f"key{i}", f"value{i}", HEADERS, 10 * i) for i in (1, 2, 3)],
            ("key4", "value4", (), 40),
        ]


def test_ProcessorTopologyTest_shouldConsiderModifiedTimeStamps() -> None:
    app, source, sink = simple(Later)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, [(f"key{i}", f"value{i}", 10 * i) for i in (1, 2, 3)])
        assert records(driver, sink) == [(f"key{i}", f"value{i}", 10 * i + 10) for i in (1, 2, 3)]


def test_ProcessorTopologyTest_shouldConsiderModifiedTimeStampsForMultipleProcessors() -> None:
    app = sk.App("processor-topology")
    source, sink1, sink2 = string_topics(app, "input-topic-1", "output-topic-1", "output-topic-2")
    fan_out = app.stream(source).process(FanOut, name="processor")
    fan_out.process(Forwarding, name="child1").to(sink1)
    fan_out.process(Later, name="child2").to(sink2)
    with TopologyTestDriver(app) as driver:
        for key, value, ts in [("key1", "value1", 10), ("key2", "value2", 20)]:
            driver.pipe(source, key, value, timestamp_ms=ts)
            assert records(driver, sink1) == [(key, value, ts + d) for d in (0, 5, 2)]
            assert records(driver, sink2) == [(key, value, ts + d) for d in (10, 10, 12)]


def test_ProcessorTopologyTest_shouldAddHeaders() -> None:
    app, source, sink = simple(AddHeader)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, [(f"key{i}", f"value{i}", 10 * i) for i in (1, 2, 3)])
        assert rows(driver, sink) == [(f"key{i}", f"value{i}", HEADERS, 10 * i) for i in (1, 2, 3)]


def test_ProcessorTopologyTest_testDrivingStatefulTopology() -> None:
    """Also testDrivingConnectedStateStoreTopology: the store read after processing."""
    app = sk.App("processor-topology")
    source, sink = string_topics(app, "input-topic-1", "output-topic-1")
    entries = app.table("entries", key_type=str, value_type=str)
    app.stream(source).process(lambda: Stateful("entries"), stores=[entries]).to(sink)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(
            source,
            [("key1", "value1"), ("key2", "value2"), ("key3", "value3"), ("key1", "value4")],
        )
        assert records(driver, sink) == []
        store = driver.store("entries")
    assert store == {"key1": "value4", "key2": "value2", "key3": "value3"}
    assert "key4" not in store


def test_ProcessorTopologyTest_testDrivingConnectedStateStoreInDifferentProcessors() -> None:
    """Two processors on two sources share one store."""
    app = sk.App("processor-topology")
    source1, source2, sink = string_topics(app, "input-topic-1", "input-topic-2", "output-topic-1")
    store = app.table("connectedStore", key_type=str, value_type=str)
    left = app.stream(source1).process(lambda: Stateful("connectedStore"), stores=[store])
    right = app.stream(source2).process(lambda: Stateful("connectedStore"), stores=[store])
    left.merge(right).to(sink)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(
            source1,
            [("key1", "value1"), ("key2", "value2"), ("key3", "value3"), ("key1", "value4")],
        )
        assert records(driver, sink) == []
        assert driver.store("connectedStore") == {
            "key1": "value4",
            "key2": "value2",
            "key3": "value3",
        }


def test_ProcessorTopologyTest_testDrivingSimpleMultiSourceTopology() -> None:
    app = sk.App("processor-topology")
    in1, in2, out1, out2 = string_topics(
        app, "input-topic-1", "input-topic-2", "output-topic-1", "output-topic-2"
    )
    app.stream(in1).process(Forwarding, name="processor-1").to(out1)
    app.stream(in2).process(Forwarding, name="processor-2").to(out2)
    with TopologyTestDriver(app) as driver:
        driver.pipe(in1, "key1", "value1", timestamp_ms=0)
        assert records(driver, out1) == [("key1", "value1", 0)]
        assert records(driver, out2) == []
        driver.pipe(in2, "key2", "value2", timestamp_ms=0)
        assert records(driver, out2) == [("key2", "value2", 0)]
        assert records(driver, out1) == []


def test_ProcessorTopologyTest_testDrivingForwardToSourceTopology() -> None:
    """A sink's topic is another source's: the record goes on through it."""
    app = sk.App("processor-topology")
    in1, out1, out2 = string_topics(app, "input-topic-1", "output-topic-1", "output-topic-2")
    app.stream(in1).to(out1)
    app.stream(out1).to(out2)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(in1, [(f"key{i}", f"value{i}", 0) for i in (1, 2, 3)])
        assert records(driver, out2) == [(f"key{i}", f"value{i}", 0) for i in (1, 2, 3)]


class ValueTimestamp(sk.Processor):
    """Kafka's ValueTimestampProcessor: drops the value's "@..." suffix."""

    def process(self, record: sk.Record) -> None:
        self.context.forward(record.with_value(record.value.split("@")[0]))


def test_ProcessorTopologyTest_testDrivingInternalRepartitioningForwardingTimestamp() -> None:
    """Through a repartition topic, the record keeps its timestamp and gains no headers."""
    app = sk.App("processor-topology")
    source, sink = string_topics(app, "input-topic-1", "output-topic-1")
    stream = app.stream(source).process(ValueTimestamp).repartition(name="through-topic-1")
    stream.to(sink)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(source, [(f"key{i}", f"value{i}@{i}000", i * 1000) for i in (1, 2, 3)])
        assert rows(driver, sink) == [(f"key{i}", f"value{i}", (), i * 1000) for i in (1, 2, 3)]


class Recurse(sk.Processor):
    """TopologyTestDriverTest.shouldEnqueueLaterOutputsAfterEarlierOnes' processor."""

    def process(self, record: sk.Record) -> None:
        if not record.value.startswith("recurse-"):
            self.context.forward(record.with_value(f"recurse-{record.value}"), to="recursiveSink")
        self.context.forward(record, to="sink")


def test_TopologyTestDriverTest_shouldEnqueueLaterOutputsAfterEarlierOnes() -> None:
    app = sk.App("ttd")
    source, out = string_topics(app, "input", "output")
    recurse = app.stream(source).process(Recurse)
    recurse.to(source, name="recursiveSink")
    recurse.to(out, name="sink")
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "B", "beta")
        assert driver.read_output(out) == [("B", "beta"), ("B", "recurse-beta")]


# TopologyTestDriverTest's CustomMaxAggregator ---------------------------------------


class MaxAggregator(sk.Processor):
    """Keeps each key's largest value; every minute of wall-clock time and every 10 s
    of stream time forwards the whole store, stamped with the punctuation's time."""

    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        context.schedule(60, sk.WALL_CLOCK, self.flush_store)
        context.schedule(10, sk.STREAM_TIME, self.flush_store)
        self.store = context.store("aggStore")

    def process(self, record: sk.Record) -> None:
        old = self.store.get(record.key)
        if old is None or record.value > old:
            self.store[record.key] = record.value

    def flush_store(self, timestamp: int) -> None:
        for key, value in self.store.items():
            self.context.forward(sk.Record(key, value, timestamp))


def max_aggregator() -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("ttd-max")
    source = app.topic("input-topic", key_type=str, value_type=int)
    result = app.topic("result-topic", key_type=str, value_type=int)
    store = app.table("aggStore", key_type=str, value_type=int)
    app.stream(source).process(MaxAggregator, name="aggregator", stores=[store]).to(result)
    return app, source, result


def test_TopologyTestDriverTest_max_aggregator_stream_time() -> None:
    """shouldFlushStoreForFirstInput, shouldNotUpdateStoreForSmallerValue/LargerValue,
    shouldUpdateStoreForNewKey, shouldPunctuateIfEvenTimeAdvances. Kafka puts
    ("a", 21) in the store through the driver first; here a first record at -inf
    stream time cannot, so ("a", 21) is piped at time 0 (the first punctuation fires
    then, and the next is due at 10 s: 9999 ms does not reach it, as in Kafka)."""
    app, source, result = max_aggregator()
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "a", 21, timestamp_ms=0)
        assert records(driver, result) == [("a", 21, 0)]
        driver.pipe(source, "a", 1, timestamp_ms=9999)  # smaller: the store keeps 21
        assert driver.store("aggStore") == {"a": 21}
        assert records(driver, result) == []
        driver.pipe(source, "a", 1, timestamp_ms=10000)  # stream time reaches 10 s
        assert records(driver, result) == [("a", 21, 10000)]
        driver.pipe(source, "a", 42, timestamp_ms=10001)  # larger: updated
        assert driver.store("aggStore") == {"a": 42}
        driver.pipe(source, "b", 21, timestamp_ms=20000)  # a new key, and a punctuation
        assert driver.store("aggStore") == {"a": 42, "b": 21}
        assert records(driver, result) == [("a", 42, 20000), ("b", 21, 20000)]


def test_TopologyTestDriverTest_shouldPunctuateIfWallClockTimeAdvances() -> None:
    app, source, result = max_aggregator()
    with TopologyTestDriver(app) as driver:
        driver.pipe(source, "a", 21, timestamp_ms=0)
        records(driver, result)  # the stream-time punctuation of the first record
        driver.advance_wall_clock(60)
        assert records(driver, result) == [("a", 21, 60000)]


class Noting(sk.Processor):
    """Kafka's MockProcessor of TopologyTestDriverTest: notes what it was handed."""

    def __init__(self, seen: list[tuple[Any, ...]]) -> None:
        self.seen = seen

    def process(self, record: sk.Record) -> None:
        c = self.context
        self.seen.append((record.key, record.value, tuple(record.headers), record.timestamp))
        self.seen.append((c.topic, c.partition, c.offset))


def test_TopologyTestDriverTest_shouldSendRecordViaCorrectSourceTopic() -> None:
    """Also shouldSetRecordMetadata: each source's processor gets its own topic's
    records, with their headers, timestamp, topic and offset."""
    app = sk.App("ttd-sources")
    source1, source2 = string_topics(app, "source-topic-1", "source-topic-2")
    seen1: list[tuple[Any, ...]] = []
    seen2: list[tuple[Any, ...]] = []
    app.stream(source1).process(lambda: Noting(seen1), name="processor-1")
    app.stream(source2).process(lambda: Noting(seen2), name="processor-2")
    with TopologyTestDriver(app) as driver:
        driver.pipe(source1, "key1", "value1", timestamp_ms=42, headers=HEADERS)
        assert seen1 == [("key1", "value1", HEADERS, 42), ("source-topic-1", 0, 0)]
        assert seen2 == []
        driver.pipe(source2, "key2", "value2", timestamp_ms=43)
        assert seen1 == [("key1", "value1", HEADERS, 42), ("source-topic-1", 0, 0)]
        assert seen2 == [("key2", "value2", (), 43), ("source-topic-2", 0, 0)]
