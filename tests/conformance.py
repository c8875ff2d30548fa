"""Shared pieces of the Kafka Streams conformance tests (tests/test_conformance_*.py).

Each conformance test ports one test method of Apache Kafka's Streams test suite:
the same inputs, and the outputs Kafka asserts (records and timestamps; where
Kafka's output depends on its record cache, the cache-disabled expectation). The
helpers below mirror Kafka's test mocks, so the expected strings read as in the
Java source: Java's `null` prints as "null".
"""

from __future__ import annotations

from typing import Any

import streamkit as sk
from streamkit.testing import TopologyTestDriver


def text(value: Any) -> str:
    return "null" if value is None else str(value)


def tostring_joiner(left: Any, right: Any) -> str:
    """Kafka's MockValueJoiner.TOSTRING_JOINER: `left+right`."""
    return f"{text(left)}+{text(right)}"


def tostring_adder(_key: Any, value: Any, aggregate: Any) -> str:
    """Kafka's MockAggregator.TOSTRING_ADDER: `agg+value`."""
    return f"{aggregate}+{value}"


def tostring_remover(_key: Any, value: Any, aggregate: Any) -> str:
    """Kafka's MockAggregator.TOSTRING_REMOVER: `agg-value`."""
    return f"{aggregate}-{value}"


def string_init() -> str:
    """Kafka's MockInitializer.STRING_INIT."""
    return "0"


def records(driver: TopologyTestDriver, topic: sk.Topic) -> list[tuple[Any, Any, int]]:
    """`(key, value, timestamp)` written since the last read: Kafka's KeyValueTimestamp."""
    return [(r.key, r.value, r.timestamp) for r in driver.read_records(topic)]


def string_topics(app: sk.App, *names: str, partitions: int = 1) -> list[sk.Topic]:
    return [app.topic(n, key_type=str, value_type=str, partitions=partitions) for n in names]
