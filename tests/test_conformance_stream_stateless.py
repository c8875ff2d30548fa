"""Kafka Streams conformance: stateless KStream operators.

Ported from org.apache.kafka.streams.kstream.internals.KStreamSplitTest,
KStreamFlatMapTest, KStreamFlatMapValuesTest, KStreamMapTest, KStreamSelectKeyTest,
KStreamFilterTest and KStreamPeekTest: records keep their timestamps and order.
"""

from __future__ import annotations

from typing import Any

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

