"""Kafka Streams conformance: KStream.repartition.

Ported from org.apache.kafka.streams.kstream.internals.KStreamRepartitionTest.
(shouldInvokePartitionerWhenSet is not ported: repartition() takes no partitioner.)
"""

from __future__ import annotations

import pytest

import streamkit as sk


def test_KStreamRepartitionTest_shouldThrowWhenNumberOfPartitionsDoNotMatchWhenJoining() -> None:
    """...shouldThrowAnExceptionWhenNumberOfPartitionsOfRepartitionOperationsDoNotMatchWhenJoining:
    the topology is refused, naming both repartition topics and their counts."""
    app = sk.App("repartition-mismatch")
    topic_b, source, out = (
        app.topic(n, key_type=int, value_type=str) for n in ("topic-b", "input", "topic-output")
    )
    b = app.stream(topic_b).repartition(name="topic-b-scale-up", partitions=2)
    (
        app.stream(source)
        .repartition(name="input-topic-scale-up", partitions=4)
        .join(b, lambda _v1, v2: v2, window=sk.JoinWindows.of_time_difference_with_no_grace(10))
        .to(out)
    )
    with pytest.raises(
        sk.TopologyError,
        match="repartition-mismatch-input-topic-scale-up-repartition has 4, "
        "repartition-mismatch-topic-b-scale-up-repartition has 2 partitions",
    ):
        app.topology()
