"""Values kept with a timestamp: what Kafka Streams' timestamped stores hold.

A DSL result is stamped with the latest timestamp among the rows that made it
(an aggregate's: the larger of the record's and the previous aggregate's; a
table-table join's: the larger of the two rows'), so the stores behind
aggregations and KTables keep each row's timestamp next to its value, packed as
`timestamp (8 bytes, big-endian) | value bytes`, as Kafka's ValueAndTimestamp
serializer does. One 8-byte prefix and one tuple per row is the whole cost.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ..serde import Serde
from ..topic import Topic
from .table import Table

_TIME = struct.Struct(">q")


class ValueAndTimestamp(NamedTuple):
    """A stored value with the timestamp of the latest record that made it."""

    value: Any
    timestamp: int


class TimestampedSerde:
    """`ValueAndTimestamp` <-> `timestamp | value bytes`, the value with its own serde."""

    def __init__(self, inner: Serde[Any]) -> None:
        self.inner = inner

    def serialize(self, value: tuple[Any, int] | None) -> bytes | None:
        """A `ValueAndTimestamp`, or the plain `(value, timestamp)` pair hot paths store."""
        if value is None:
            return None
        return _TIME.pack(value[1]) + (self.inner.serialize(value[0]) or b"")

    def deserialize(self, data: bytes | None) -> ValueAndTimestamp | None:
        if data is None:
            return None
        (timestamp,) = _TIME.unpack_from(data)
        return ValueAndTimestamp(self.inner.deserialize(data[_TIME.size :]), timestamp)


class TimestampedTable(Table):
    """A table of `ValueAndTimestamp` rows whose changelog is its own (aggregations)."""

    timestamped = True


class SourceTable(Table):
    """A KTable's store, restored from its source topic: rows keep the record timestamp.

    The topic holds the user's value bytes and the record timestamp apart; the
    store holds both in one row, so a restore prefixes each value with its
    record's timestamp.
    """

    timestamped = True

    def __init__(self, name: str, topic: Topic) -> None:
        super().__init__(name, topic, changelog_is_source=True)
        self._value_serde = TimestampedSerde(topic.value_serde)

    @property
    def value_serde(self) -> Serde[Any]:
        return self._value_serde  # type: ignore[return-value]

    def restored_value(self, raw: bytes | None, timestamp_ms: int) -> bytes | None:
        return None if raw is None else _TIME.pack(timestamp_ms) + raw
