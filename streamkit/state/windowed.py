"""Windowed tables: values per (key, window), kept for a retention in event time.

A window store row is keyed by `len(key) | key | start | end` (big-endian), so one
key's windows are adjacent and ordered by start, and a fetch by key and time range
is one range scan. Rows carry the window's end as their time: windows that ended
more than `retention` before the task's stream time are dropped, and their
changelog (compact,delete) forgets them by time as Kafka Streams' does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

from ..serde import Serde
from ..topic import Topic
from .table import Table

_LEN = struct.Struct(">I")
_SPAN = struct.Struct(">qq")

WindowKey = tuple[Any, int, int]  # key, start_ms, end_ms
# `len | key | start | end` as one struct per key length: one pack per window key,
# at half the cost of packing the parts and joining them (a key per record at commit).
_LAYOUTS: dict[int, struct.Struct] = {}


class WindowKeySerde:
    """(key, start_ms, end_ms) <-> `len | key | start | end`, the key with its own serde.

    `end_first` writes `len | key | end | start` instead: sessions order a key's
    windows by end, time windows by start.
    """

    end_first = False

    def __init__(self, inner: Serde[Any]) -> None:
        self.inner = inner

    def serialize(self, value: WindowKey | None) -> bytes | None:
        if value is None:
            return None
        key, start, end = value
        kb = self.inner.serialize(key)
        if kb is None:
            return None
        length = len(kb)
        layout = _LAYOUTS.get(length)
        if layout is None:
            layout = _LAYOUTS[length] = struct.Struct(f">I{length}sqq")
        if self.end_first:
            return layout.pack(length, kb, end, start)
        return layout.pack(length, kb, start, end)

    def deserialize(self, data: bytes | None) -> WindowKey | None:
        if data is None:
            return None
        (length,) = _LEN.unpack_from(data)
        first, second = _SPAN.unpack_from(data, 4 + length)
        start, end = (second, first) if self.end_first else (first, second)
        return self._window(self.inner.deserialize(data[4 : 4 + length]), start, end)

    def _window(self, key: Any, start: int, end: int) -> WindowKey:
        return key, start, end


def window_end(data: bytes) -> int:
    (length,) = _LEN.unpack_from(data)
    return int(_SPAN.unpack_from(data, 4 + length)[1])


class WindowedTable(Table):
    """Tumbling (advance = size) or hopping windows of `size_s`, by record timestamp.

    `w[key, start_ms]` reads and writes one window; `fetch` and `fetch_all` scan
    by time; `windows_for(timestamp_ms)` gives the starts of the windows a record
    falls in.
    """

    def __init__(
        self,
        name: str,
        changelog: Topic,
        size_s: float,
        advance_s: float,
        retention_s: float,
        default: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(name, changelog, default)
        self.size_ms = round(size_s * 1000)
        self.advance_ms = round(advance_s * 1000)
        self.retention_ms = round(retention_s * 1000)
        self._inner_key_serde = changelog.key_serde
        changelog.key_serde = WindowKeySerde(changelog.key_serde)

    @property
    def inner_key_serde(self) -> Serde[Any]:
        """The serde of the keys alone, without their window (queries parse keys with it)."""
        return self._inner_key_serde

    def windows_for(self, timestamp_ms: int) -> list[int]:
        """Starts of the windows containing the timestamp, oldest first."""
        last = timestamp_ms - timestamp_ms % self.advance_ms
        first = max(0, last - self.size_ms + self.advance_ms)
        return list(range(first, last + 1, self.advance_ms))

    def _window(self, item: tuple[Any, int]) -> WindowKey:
        key, start = item
        return key, start, start + self.size_ms

    def __getitem__(self, item: tuple[Any, int]) -> Any:
        return super().__getitem__(self._window(item))

    def __setitem__(self, item: tuple[Any, int], value: Any) -> None:
        super().__setitem__(self._window(item), value)

    def __delitem__(self, item: tuple[Any, int]) -> None:
        super().__delitem__(self._window(item))

    def __contains__(self, item: object) -> bool:
        assert isinstance(item, tuple)
        return super().__contains__(self._window(item))

    def fetch(self, key: Any, time_from_ms: int, time_to_ms: int) -> Iterator[tuple[int, int, Any]]:
        """(start, end, value) of the key's windows starting in [time_from, time_to]."""
        low = (key, time_from_ms, 0)
        high = (key, time_to_ms + 1, 0)
        for (_, start, end), value in self._store().range(low, high):
            yield start, end, value

    def fetch_all(self, time_from_ms: int, time_to_ms: int) -> Iterator[tuple[Any, int, int, Any]]:
        """(key, start, end, value) of every window of this task starting in the range."""
        for (key, start, end), value in self._store().range(None, None):
            if time_from_ms <= start <= time_to_ms:
                yield key, start, end, value

    # Shard policies ------------------------------------------------------------

    def routing_bytes(self, key: Any) -> bytes | None:
        return self._inner_key_serde.serialize(key[0])

    def routing_key(self, key: Any) -> Any:
        return key[0]

    def row_time(self, key: Any, now_ms: int) -> int:
        return int(key[2])

    def restored_row_time(self, key_bytes: bytes, timestamp_ms: int) -> int:
        return window_end(key_bytes)

    def expiry_cutoff(self, now_ms: int, stream_time_ms: int | None) -> int | None:
        return None if stream_time_ms is None else stream_time_ms - self.retention_ms

    @property
    def expiry_horizon_s(self) -> float | None:
        return self.retention_ms / 1000

    tombstones_on_expiry = False
    row_time_in_key = True
    expiry_is_final = True
