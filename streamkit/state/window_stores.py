"""Stores behind the DSL's windowed aggregations: shards of ordinary tables with changelogs,
so windows restore and fail over like any table.

- `TimeWindowStore`: aggregates per `Windowed(key, start, end)` of tumbling, hopping
  or sliding windows; a `WindowedTable` whose keys read back as `Windowed`.
- `SessionStore`: aggregates per session. Its rows are ordered by session end, so
  the sessions a record may join (those ending at most a gap before it) are one
  range scan that, for in-order input, reads nothing older.
- `PendingWindows`: emit-final's buffer (Kafka's suppression buffer): the latest
  aggregate of each window not emitted yet, with its latest record time. It holds
  the value itself, so a window emitted long after its store row expired (stream
  time jumped) is still emitted whole.

Every key routes by its first part, the grouped key, so a task's shard check holds.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ..serde import Serde
from ..topic import Topic
from .table import Table
from .timestamped import TimestampedSerde, ValueAndTimestamp
from .windowed import WindowedTable, WindowKeySerde

_LEN = struct.Struct(">I")
_TIME = struct.Struct(">q")
_LATEST = 2**63 - 1

__all__ = [
    "PendingWindows",
    "SessionKeySerde",
    "SessionStore",
    "TimeWindowStore",
    "TimestampedSerde",
    "ValueAndTimestamp",
    "Windowed",
    "WindowedKeySerde",
]


class Windowed(NamedTuple):
    """A windowed aggregate's key: the grouped key and its window [start, end) in ms.

    (Sliding and session windows include their end, as in Kafka Streams.)
    """

    key: Any
    start_ms: int
    end_ms: int


class WindowedKeySerde(WindowKeySerde):
    """`len | key | start | end`, read back as `Windowed`."""

    def _window(self, key: Any, start: int, end: int) -> Windowed:
        return Windowed(key, start, end)


class SessionKeySerde(WindowedKeySerde):
    """`len | key | end | start`: one key's sessions adjacent, ordered by end."""

    end_first = True


class TimeWindowStore(WindowedTable):
    """Windows of `size_ms` (a sliding window's time difference). Rows are
    `ValueAndTimestamp`: a window's result carries its latest record's timestamp.

    Tumbling and hopping windows (`advance_ms` given) are kept as Kafka Streams'
    window stores show them: while their start is within `retention_ms` (size plus
    grace) of the latest window start the store has seen, so a window goes once it
    closes (TimeWindowedKStreamImplTest.shouldMaterializeCount). Kafka's store for
    emit-final keeps the window at the boundary too (`final`). Sliding windows
    are kept `retention_ms` of stream time after they end.
    """

    timestamped = True

    def __init__(
        self,
        name: str,
        changelog: Topic,
        size_ms: int,
        retention_ms: int,
        *,
        advance_ms: int | None = None,
        final: bool = False,
    ) -> None:
        # Which windows a record falls in is the aggregation's business (hopping,
        # sliding), so the store's own advance is never used.
        super().__init__(name, changelog, size_ms / 1000, 1.0, retention_ms / 1000)
        # Exact, not through float seconds: they decide which windows a record is in.
        self.size_ms = size_ms
        self.retention_ms = retention_ms
        self.advance_ms = advance_ms
        self.final = final
        changelog.key_serde = WindowedKeySerde(self._inner_key_serde)

    def expiry_cutoff(self, now_ms: int, stream_time_ms: int | None) -> int | None:
        if self.advance_ms is None or stream_time_ms is None:
            return super().expiry_cutoff(now_ms, stream_time_ms)
        # The latest window start written: that of the newest record's last window.
        observed = stream_time_ms - stream_time_ms % self.advance_ms
        # Rows are timed by their end: start > observed - retention, or >= if final.
        return observed - self.retention_ms + self.size_ms + (0 if self.final else 1)


class SessionStore(Table):
    """Sessions by `Windowed(key, start, end)`, kept `retention_ms` of stream time after
    they end; the changelog forgets them by time (compact,delete)."""

    def __init__(self, name: str, changelog: Topic, retention_ms: int) -> None:
        super().__init__(name, changelog)
        self.retention_ms = retention_ms
        self._inner_key_serde = changelog.key_serde
        changelog.key_serde = SessionKeySerde(changelog.key_serde)

    def find(
        self, key: Any, earliest_end_ms: int, latest_start_ms: int
    ) -> list[tuple[Windowed, Any]]:
        """The key's sessions ending at or after `earliest_end` and starting at or before
        `latest_start`: those a record within a gap of them joins."""
        low = (key, 0, max(0, earliest_end_ms))
        high = (key, 0, _LATEST)
        found = []
        for window, value in self._store().range(low, high):
            if window.start_ms > latest_start_ms:
                break  # sessions never overlap: the later ones start later still
            found.append((window, value))
        return found

    # Shard policies: as a window store's, by session end --------------------------

    def routing_bytes(self, key: Any) -> bytes | None:
        return self._inner_key_serde.serialize(key[0])

    def routing_key(self, key: Any) -> Any:
        return key[0]

    def row_time(self, key: Any, now_ms: int) -> int:
        return int(key[2])

    def restored_row_time(self, key_bytes: bytes, timestamp_ms: int) -> int:
        (length,) = _LEN.unpack_from(key_bytes)
        return int(_TIME.unpack_from(key_bytes, 4 + length)[0])

    def expiry_cutoff(self, now_ms: int, stream_time_ms: int | None) -> int | None:
        return None if stream_time_ms is None else stream_time_ms - self.retention_ms

    @property
    def expiry_horizon_s(self) -> float | None:
        return self.retention_ms / 1000

    tombstones_on_expiry = False
    row_time_in_key = True
    expiry_is_final = True


class PendingWindows(Table):
    """Emit-final's buffer: `Windowed` -> `ValueAndTimestamp`, keyed like its window store.

    No expiry: a row leaves when its window is emitted (or merged away, for sessions).
    """

    timestamped = True

    def __init__(self, name: str, changelog: Topic, window_key_serde: Serde[Any]) -> None:
        super().__init__(name, changelog)
        self._inner_key_serde = changelog.key_serde
        changelog.key_serde = window_key_serde

    def routing_bytes(self, key: Any) -> bytes | None:
        return self._inner_key_serde.serialize(key[0])

    def routing_key(self, key: Any) -> Any:
        return key[0]
