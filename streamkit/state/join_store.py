"""Stores behind the DSL's joins: shards of ordinary tables, so they restore and fail over.

- `JoinBuffer`: one side of a stream-stream join, the values seen per (key,
  timestamp). A window store whose windows are instants: a fetch by key and time
  range is one range scan, and rows older than the side's retention are dropped
  by stream time, as Kafka Streams' join window stores are.
- `PendingJoins`: records of a left or outer stream-stream join that found no
  partner yet, by (key, timestamp, side); they leave it when a partner arrives or
  when their window closes and the join emits them with None for the other side
  (Kafka Streams' "outer join store", KIP-633/KAFKA-10847).
- `SubscriptionStore`: the right side of a foreign-key join, which left keys
  subscribe to which foreign key (KIP-213); a prefix scan by foreign key finds the
  rows to update when the right row changes.

Every composite key routes by its first part, the key its input topic is
partitioned by, so a task's shard check holds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from ..serde import Serde
from ..topic import Topic
from .table import Table
from .windowed import WindowedTable, WindowKeySerde

_LEN = struct.Struct(">I")

LEFT, RIGHT = 0, 1


class ValuesSerde:
    """A list of values, each with the stream's own serde: `len | bytes` repeated."""

    def __init__(self, inner: Serde[Any]) -> None:
        self.inner = inner

    def serialize(self, values: list[Any] | None) -> bytes | None:
        if values is None:
            return None
        parts = []
        for value in values:
            data = self.inner.serialize(value) or b""
            parts.append(_LEN.pack(len(data)))
            parts.append(data)
        return b"".join(parts)

    def deserialize(self, data: bytes | None) -> list[Any] | None:
        if data is None:
            return None
        values, at = [], 0
        while at < len(data):
            (length,) = _LEN.unpack_from(data, at)
            at += 4
            values.append(self.inner.deserialize(data[at : at + length]))
            at += length
        return values


class JoinBuffer(WindowedTable):
    """Values per (key, timestamp) of one join side, kept `retention_ms` of the side's time.

    Kafka Streams' join window stores each keep their own clock: the latest
    timestamp put in them. A shard here expires by its task's stream time, so the
    join reports how far each task's side lags behind that (`lag_behind`) and rows
    are kept that much longer: a side whose input went quiet still joins what it
    holds, as in Kafka.
    """

    def __init__(self, name: str, changelog: Topic, retention_ms: int) -> None:
        super().__init__(name, changelog, 0.0, 1.0, retention_ms / 1000)
        # Exact, not through float seconds: the retention decides which rows still join.
        self.retention_ms = retention_ms
        # Per task partition: how far this side's latest timestamp is behind the task's
        # stream time; the largest of them widens every shard's retention.
        self._lags: dict[int, int] = {}
        self._max_lag = 0

    def lag_behind(self, partition: int, lag: int) -> None:
        previous = self._lags.get(partition, 0)
        if lag == previous:
            return
        self._lags[partition] = lag
        if lag >= self._max_lag:
            self._max_lag = lag
        elif previous == self._max_lag:
            self._max_lag = max(self._lags.values())

    def expiry_cutoff(self, now_ms: int, stream_time_ms: int | None) -> int | None:
        if stream_time_ms is None:
            return None
        return stream_time_ms - self.retention_ms - self._max_lag

    # A side that falls behind moves the cutoff back: what it passed may join again.
    expiry_is_final = False

    def add(self, key: Any, timestamp_ms: int, value: Any) -> None:
        """Append: several records of one key may share a timestamp."""
        values = self.get((key, timestamp_ms, timestamp_ms))
        self[key, timestamp_ms] = [value] if values is None else [*values, value]

    def between(
        self, key: Any, time_from_ms: int, time_to_ms: int
    ) -> Iterator[tuple[int, list[Any]]]:
        """(timestamp, values) of the key's records in [from, to], oldest first."""
        if time_to_ms < 0:
            return  # timestamps are never negative
        for start, _end, values in self.fetch(key, max(0, time_from_ms), max(0, time_to_ms)):
            yield start, values


class PendingJoins(Table):
    """Unmatched records of a left/outer join, by (key, timestamp, side); no expiry:
    the join deletes each row when it matches or when it is emitted."""

    def __init__(self, name: str, changelog: Topic) -> None:
        super().__init__(name, changelog)
        self._inner_key_serde = changelog.key_serde
        # (key, timestamp, side) has the shape of a window key: key, then two integers.
        changelog.key_serde = WindowKeySerde(changelog.key_serde)

    def routing_bytes(self, key: Any) -> bytes | None:
        return self._inner_key_serde.serialize(key[0])

    def routing_key(self, key: Any) -> Any:
        return key[0]

    def key_bytes(self, key: Any) -> bytes:
        """A join key's bytes, which order pending records of one timestamp and side."""
        return self._inner_key_serde.serialize(key) or b""


class _Bound:
    """Raw key bytes for a range scan, passed through the key serde untouched."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class PairKeySerde:
    """(first, second) <-> `len(first) | first | second`: one first part's keys are adjacent."""

    def __init__(self, first: Serde[Any], second: Serde[Any]) -> None:
        self.first = first
        self.second = second

    def prefix(self, first: Any) -> bytes:
        data = self.first.serialize(first) or b""
        return _LEN.pack(len(data)) + data

    def serialize(self, value: tuple[Any, Any] | _Bound | None) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, _Bound):
            return value.raw
        first, second = value
        return self.prefix(first) + (self.second.serialize(second) or b"")

    def deserialize(self, data: bytes | None) -> tuple[Any, Any] | None:
        if data is None:
            return None
        (length,) = _LEN.unpack_from(data)
        return (
            self.first.deserialize(data[4 : 4 + length]),
            self.second.deserialize(data[4 + length :]),
        )


def _after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string above every string that starts with `prefix`."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class SubscriptionStore(Table):
    """(foreign key, left key) -> 1: which left rows reference a right row."""

    def __init__(self, name: str, changelog: Topic, left_key_serde: Serde[Any]) -> None:
        super().__init__(name, changelog)
        self._serde = PairKeySerde(changelog.key_serde, left_key_serde)
        changelog.key_serde = self._serde

    def routing_bytes(self, key: Any) -> bytes | None:
        return self._serde.first.serialize(key[0])

    def routing_key(self, key: Any) -> Any:
        return key[0]

    def subscribers(self, foreign_key: Any) -> list[Any]:
        """The left keys subscribed to a foreign key (read whole: callers write as they go)."""
        prefix = self._serde.prefix(foreign_key)
        rows = self._store().range(_Bound(prefix), _Bound(_after_prefix(prefix)))
        return [left_key for (_fk, left_key), _ in rows]
