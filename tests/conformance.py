"""Shared pieces of the Kafka Streams conformance tests (tests/test_conformance_*.py).

Each conformance test ports one test method of Apache Kafka's Streams test suite:
the same inputs, and the outputs Kafka asserts (records and timestamps; where
Kafka's output depends on its record cache, the cache-disabled expectation). The
helpers below mirror Kafka's test mocks, so the expected strings read as in the
Java source: Java's `null` prints as "null".
"""

from __future__ import annotations

from collections.abc import Callable
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


# Kafka's colour data (KTableAggregateTest.testCountHelper, and KStreamImplTest's
# toTable cases): (key, colour, timestamp) in, and a count of each colour's keys out.
COLOURS: list[tuple[str, str, int]] = [
    ("A", "green", 10),
    ("B", "green", 9),
    ("A", "blue", 12),
    ("C", "yellow", 15),
    ("D", "green", 11),
]
COLOUR_COUNTS: list[tuple[str, int, int]] = [
    ("green", 1, 10),
    ("green", 2, 10),
    ("green", 1, 12),
    ("blue", 1, 12),
    ("yellow", 1, 15),
    ("green", 2, 12),
]


# A step of Kafka's stream-table join tests: pushToStream / pushToTable /
# pushNullValueToTable ("stream" / "table" / "nulls"), how many keys of 0..3, and the
# value prefix; then the records out.
JoinStep = tuple[tuple[str, int, str], list[tuple[Any, str, int]]]


def run_join_steps(
    driver: TopologyTestDriver,
    topics: tuple[sk.Topic, sk.Topic, sk.Topic],
    steps: list[JoinStep],
    table_timestamp: Callable[[int], int],
) -> None:
    """pushToStream pipes key i at timestamp i; pushToTable at `table_timestamp(i)`;
    pushNullValueToTable deletes at 0. Each step's records out are checked."""
    stream, table, out = topics
    for number, ((what, count, prefix), expected) in enumerate(steps):
        for key in range(count):
            if what == "stream":
                driver.pipe(stream, key, f"{prefix}{key}", timestamp_ms=key)
            elif what == "table":
                driver.pipe(table, key, f"{prefix}{key}", timestamp_ms=table_timestamp(key))
            else:
                driver.pipe(table, key, None, timestamp_ms=0)
        assert records(driver, out) == expected, f"step {number}"


# KStreamGlobalKTableJoinTest and KStreamGlobalKTableLeftJoinTest: the stream's value
# optionally carries the global table's key after a comma.
GLOBAL_JOIN_KEYS = (0, 1, 2, 3)


def global_join_key(_key: int | None, value: str) -> str | None:
    """Their key selector: the table key after the comma, None without one."""
    tokens = value.split(",")
    return tokens[1] if len(tokens) > 1 else None


class GlobalJoinDriver:
    """Their setUp and push helpers. Stream records are stamped 0, 1, 2, ... as
    Kafka's test input topic advances by 1 ms a record."""

    def __init__(self, how: str) -> None:
        self.app = sk.App(f"global-{how}")
        self.stream = self.app.topic("streamTopic", key_type=int, value_type=str)
        self.table = self.app.topic("globalTableTopic", key_type=str, value_type=str)
        self.out = self.app.topic("out", key_type=int, value_type=str)
        join = getattr(self.app.stream(self.stream), how)
        join(self.app.global_ktable(self.table), tostring_joiner, key_selector=global_join_key).to(
            self.out
        )
        self.stream_ts = 0

    def run(self, script: Callable[[GlobalJoinDriver], None]) -> None:
        with TopologyTestDriver(self.app) as self.driver:
            script(self)

    def push_to_stream(
        self, count: int, prefix: str, include_foreign_key: bool = True, null_key: bool = False
    ) -> None:
        """`null_key`: the first record without a key (KIP-962's relaxed joins)."""
        for i, key in enumerate(GLOBAL_JOIN_KEYS[:count]):
            value = f"{prefix}{key}" + (f",FKey{key}" if include_foreign_key else "")
            key_in = None if null_key and i == 0 else key
            self.driver.pipe(self.stream, key_in, value, timestamp_ms=self.stream_ts)
            self.stream_ts += 1

    def push_to_global_table(self, count: int, prefix: str | None) -> None:
        for key in GLOBAL_JOIN_KEYS[:count]:
            value = None if prefix is None else f"{prefix}{key}"
            self.driver.pipe(self.table, f"FKey{key}", value)

    def results(self) -> list[tuple[Any, str, int]]:
        return records(self.driver, self.out)
