"""Kafka Streams conformance: stateless KStream operators.

Ported from org.apache.kafka.streams.kstream.internals.KStreamSplitTest,
KStreamFlatMapTest, KStreamFlatMapValuesTest, KStreamMapTest, KStreamSelectKeyTest,
KStreamFilterTest and KStreamPeekTest: records keep their timestamps and order.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance import records

import streamkit as sk
from streamkit.testing import TopologyTestDriver

SPLIT_KEYS = (-1, 0, 1, 2, 3, 4, 5, 6, 7)


def _split_app() -> tuple[sk.App, sk.KStream, dict[str, sk.Topic]]:
    app = sk.App("kstream-split")
    topic = app.topic("topic", key_type=int, value_type=str)
    names = ("x2", "x3", "x5", "output", "foo-bar", "foo-4", "foo-5", "foo-0")
    outs = {n: app.topic(n, key_type=int, value_type=str) for n in names}
    return app, app.stream(topic), outs


def _with_driver(app: sk.App) -> TopologyTestDriver:
    """KStreamSplitTest.withDriver: keys -1..7, value "V<key>"."""
    driver = TopologyTestDriver(app)
    topic = app.topic("topic", key_type=int, value_type=str)
    for key in SPLIT_KEYS:
        driver.pipe(topic, key, f"V{key}")
    return driver


def is_even(key: int, _value: str) -> bool:
    return key % 2 == 0


def multiple_of(n: int) -> Any:
    return lambda key, _value: key % n == 0


def test_KStreamSplitTest_testKStreamSplit() -> None:
    app, source, outs = _split_app()
    branches = (
        source.split()
        .branch(is_even, chain=lambda ks: ks.to(outs["x2"]))
        .branch(multiple_of(3), chain=lambda ks: ks.to(outs["x3"]))
        .branch(multiple_of(5), chain=lambda ks: ks.to(outs["x5"]))
        .no_default_branch()
    )
    assert branches == {}
    with _with_driver(app) as driver:
        assert driver.read_values(outs["x2"]) == ["V0", "V2", "V4", "V6"]
        assert driver.read_values(outs["x3"]) == ["V3"]
        assert driver.read_values(outs["x5"]) == ["V5"]


def test_KStreamSplitTest_testResultingMap() -> None:
    app, source, outs = _split_app()
    branches = (
        source.split(prefix="foo-")
        .branch(is_even, name="bar")
        .branch(multiple_of(3), chain=lambda ks: None)  # Branched.withConsumer(ks -> {})
        .branch(multiple_of(5), chain=lambda ks: None)  # Branched.withFunction(ks -> null)
        .branch(lambda key, _value: key < 0, chain=lambda ks: ks)
        .branch(multiple_of(7))
        .default_branch()
    )
    assert sorted(branches) == ["foo-0", "foo-4", "foo-5", "foo-bar"]
    for name, stream in branches.items():
        stream.to(outs[name])
    with _with_driver(app) as driver:
        assert driver.read_values(outs["foo-bar"]) == ["V0", "V2", "V4", "V6"]
        assert driver.read_values(outs["foo-4"]) == ["V-1"]
        assert driver.read_values(outs["foo-5"]) == ["V7"]
        assert driver.read_values(outs["foo-0"]) == ["V1"]


def test_KStreamSplitTest_testBranchingWithNoTerminalOperation() -> None:
    app, source, outs = _split_app()
    (
        source.split()
        .branch(is_even, chain=lambda ks: ks.to(outs["output"]))
        .branch(multiple_of(5), chain=lambda ks: ks.to(outs["output"]))
    )
    with _with_driver(app) as driver:
        assert driver.read_values(outs["output"]) == ["V0", "V2", "V4", "V5", "V6"]


def _int_str_app(name: str) -> tuple[sk.App, sk.Topic, sk.KStream]:
    app = sk.App(name)
    topic = app.topic("topic", key_type=int, value_type=str)
    return app, topic, app.stream(topic)


def test_KStreamFlatMapTest_testFlatMap() -> None:
    app, topic, stream = _int_str_app("kstream-flat-map")
    out = app.topic("out", key_type=str, value_type=str)
    stream.flat_map(lambda key, value: [(str(key * 10 + i), value) for i in range(key)]).to(out)
    with TopologyTestDriver(app) as driver:
        for key in range(4):
            driver.pipe(topic, key, f"V{key}", timestamp_ms=0)
        assert records(driver, out) == [
            ("10", "V1", 0),
            ("20", "V2", 0),
            ("21", "V2", 0),
            ("30", "V3", 0),
            ("31", "V3", 0),
            ("32", "V3", 0),
        ]


def test_KStreamFlatMapValuesTest_testFlatMapValues() -> None:
    app = sk.App("kstream-flat-map-values")
    topic = app.topic("topic", key_type=int, value_type=int)
    out = app.topic("out", key_type=int, value_type=str)
    app.stream(topic).flat_map_values(lambda value: [f"v{value}", f"V{value}"]).to(out)
    with TopologyTestDriver(app) as driver:
        for key in range(4):
            driver.pipe(topic, key, key, timestamp_ms=0)
        assert records(driver, out) == [
            (k, f"{letter}{k}", 0) for k in range(4) for letter in ("v", "V")
        ]


def test_KStreamMapTest_testMap() -> None:
    app, topic, stream = _int_str_app("kstream-map")
    out = app.topic("out", key_type=str, value_type=int)
    stream.map(lambda key, value: (value, key)).to(out)
    with TopologyTestDriver(app) as driver:
        for key in range(4):
            driver.pipe(topic, key, f"V{key}", timestamp_ms=10 - key)
        assert records(driver, out) == [("V0", 0, 10), ("V1", 1, 9), ("V2", 2, 8), ("V3", 3, 7)]


def test_KStreamMapTest_testKeyValueMapperResultNotNull() -> None:
    """Kafka throws on a mapper that returns null; here the stream's error policy
    (fail, by default) stops the app with an error naming the record."""
    app, topic, stream = _int_str_app("kstream-map-null")
    stream.map(lambda key, value: None).to(app.topic("out", key_type=str, value_type=int))
    with TopologyTestDriver(app) as driver, pytest.raises(sk.AgentError, match="topic"):
        driver.pipe(topic, 1, "V1", timestamp_ms=0)


def test_KStreamSelectKeyTest_testSelectKey() -> None:
    app = sk.App("kstream-select-key")
    topic = app.topic("topic_key_select", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    key_map = {1: "ONE", 2: "TWO", 3: "THREE"}
    app.stream(topic).select_key(lambda key, value: key_map[value]).to(out)
    with TopologyTestDriver(app) as driver:
        for value in (1, 2, 3):
            driver.pipe(topic, None, value, timestamp_ms=0)
        assert records(driver, out) == [("ONE", 1, 0), ("TWO", 2, 0), ("THREE", 3, 0)]


def test_KStreamFilterTest_testFilter_and_testFilterNot() -> None:
    app, topic, stream = _int_str_app("kstream-filter")
    kept, rejected = (app.topic(n, key_type=int, value_type=str) for n in ("kept", "rejected"))
    stream.filter(lambda key, _value: key % 3 == 0).to(kept)
    stream.filter_not(lambda key, _value: key % 3 == 0).to(rejected)
    with TopologyTestDriver(app) as driver:
        for key in range(1, 8):
            driver.pipe(topic, key, f"V{key}")
        assert driver.read_output(kept) == [(3, "V3"), (6, "V6")]
        assert len(driver.read_output(rejected)) == 5


def test_KStreamPeekTest_shouldObserveStreamElements() -> None:
    app, topic, stream = _int_str_app("kstream-peek")
    peeked: list[tuple[int, str]] = []
    observed: list[tuple[int, str]] = []
    stream.peek(lambda k, v: peeked.append((k, v))).foreach(lambda k, v: observed.append((k, v)))
    with TopologyTestDriver(app) as driver:
        for key in range(32):
            driver.pipe(topic, key, f"V{key}")
    expected = [(key, f"V{key}") for key in range(32)]
    assert peeked == expected
    assert observed == expected


def test_KStreamImplTest_shouldMergeTwoStreams_and_shouldMergeMultipleStreams() -> None:
    """merge passes every record on in the order the task processes them, each with
    its own timestamp."""
    app = sk.App("kstream-merge")
    topics = [app.topic(f"topic-{i}", key_type=str, value_type=str) for i in (1, 2, 3, 4)]
    two, four = (app.topic(n, key_type=str, value_type=str) for n in ("two", "four"))
    s1, s2, s3, s4 = (app.stream(t) for t in topics)
    s1.merge(s2).to(two)
    s1.merge(s2).merge(s3).merge(s4).to(four)
    inputs = [(1, "A", "aa", 1), (2, "B", "bb", 9), (3, "C", "cc", 2), (4, "D", "dd", 8)]
    inputs += [(4, "E", "ee", 3), (3, "F", "ff", 7), (2, "G", "gg", 4), (1, "H", "hh", 6)]
    with TopologyTestDriver(app) as driver:
        for n, key, value, ts in inputs:
            driver.pipe(topics[n - 1], key, value, timestamp_ms=ts)
        assert records(driver, four) == [(k, v, ts) for _n, k, v, ts in inputs]
        assert records(driver, two) == [(k, v, ts) for n, k, v, ts in inputs if n in (1, 2)]


def test_KStreamImplTest_shouldSendDataToDynamicTopics() -> None:
    app = sk.App("kstream-dynamic-topics")
    topic = app.topic("topic", key_type=str, value_type=str)
    targets = {n: app.topic(n, key_type=str, value_type=str) for n in ("topic-a-v", "topic-b-v")}
    app.stream(topic).to(lambda k, v, record: targets[f"topic-{k}-{v[0]}"])
    with TopologyTestDriver(app) as driver:
        for key, value in [("a", "v1"), ("a", "v2"), ("b", "v1")]:
            driver.pipe(topic, key, value, timestamp_ms=0)
        assert records(driver, targets["topic-a-v"]) == [("a", "v1", 0), ("a", "v2", 0)]
        assert records(driver, targets["topic-b-v"]) == [("b", "v1", 0)]
