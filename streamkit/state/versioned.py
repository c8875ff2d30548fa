"""A versioned KTable's store: each key's values over time, not just the latest.

As Kafka Streams' versioned key-value stores (KIP-889): a row is the key's history,
newest first, each version valid from its record's timestamp until the next
version's. A lookup gives the latest version, or the one valid at a timestamp.
Versions that stopped being valid more than `history_retention_ms` of stream time
ago are forgotten (the newest one always stays).

The history travels whole through the store's own changelog, so a restore needs
no special replay: `count | (timestamp, present flag, len, value bytes) ...`.
"""

from __future__ import annotations

import struct
from typing import Any

from ..serde import Serde
from ..topic import Topic
from .table import Table
from .timestamped import ValueAndTimestamp

_HEAD = struct.Struct(">I")
_VERSION = struct.Struct(">qBI")

History = list[tuple[int, Any]]  # (valid from, value or None for a deletion), newest first


class HistorySerde:
    """A key's history, each value with the table's own serde."""

    def __init__(self, inner: Serde[Any]) -> None:
        self.inner = inner

    def serialize(self, history: History | None) -> bytes | None:
        if history is None:
            return None
        parts = [_HEAD.pack(len(history))]
        for ts, value in history:
            data = b"" if value is None else (self.inner.serialize(value) or b"")
            parts.append(_VERSION.pack(ts, value is not None, len(data)))
            parts.append(data)
        return b"".join(parts)

    def deserialize(self, data: bytes | None) -> History | None:
        if data is None:
            return None
        (count,) = _HEAD.unpack_from(data)
        at, history = _HEAD.size, []
        for _ in range(count):
            ts, present, length = _VERSION.unpack_from(data, at)
            at += _VERSION.size
            value = self.inner.deserialize(data[at : at + length]) if present else None
            history.append((ts, value))
            at += length
        return history


class VersionedTable(Table):
    """History rows; views show the latest version (a deleted key shows nothing)."""

    timestamped = True

    def __init__(
        self, name: str, changelog: Topic, value_serde: Serde[Any], history_retention_ms: int
    ) -> None:
        super().__init__(name, changelog)
        self.history_retention_ms = history_retention_ms
        self._history_serde = HistorySerde(value_serde)
        changelog.value_serde = self._history_serde  # type: ignore[assignment]

    def row_view(self, row: Any) -> ValueAndTimestamp | None:
        ts, value = row[0]
        return None if value is None else ValueAndTimestamp(value, ts)

    def latest(self, key: Any) -> ValueAndTimestamp | None:
        history = self.get(key)
        return None if history is None else self.row_view(history)

    def as_of(self, key: Any, timestamp_ms: int) -> ValueAndTimestamp | None:
        """The version valid at `timestamp_ms`: the newest not newer than it."""
        for ts, value in self.get(key) or ():
            if ts <= timestamp_ms:
                return None if value is None else ValueAndTimestamp(value, ts)
        return None
