"""KTable.suppress: hold a table's updates back, and emit the latest per key later.

As Kafka Streams' `suppress(Suppressed...)`:

- `Suppressed.until_time_limit(wait, buffer)`: a key's update waits until stream
  time (the largest timestamp this node has seen) has moved `wait` past the time
  the key entered the buffer; later updates of a waiting key replace its value
  and keep its place. `wait=0` emits at once.
- `Suppressed.until_window_closes(buffer)`: for windowed tables; a window's result
  leaves once stream time passes its end plus the grace (a session's: plus the
  gap), so each window comes out once, final. Retractions (None) of windows that
  were never emitted are dropped.
- `BufferConfig.max_records(n)` / `max_bytes(n)` / `unbounded()` bound the buffer;
  when it is over, `emit_early_when_full()` (the default for a time limit) emits
  the oldest keys early, `shut_down_when_full()` (required for final results, as
  Kafka requires it) stops the task with an error rather than emit a non-final
  result.

The buffer is a store with a changelog, so a failover neither loses nor repeats
what it held. A lookup (a join against the suppressed table) sees what was
emitted: a buffered key's value from before it entered the buffer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sortedcontainers import SortedList

from ..errors import ConfigError, StateError
from ..processor import Record
from ..serde import PythonSerde, Serde
from ..state.table import Table
from ..state.timestamped import ValueAndTimestamp
from ..state.windowed import WindowKeySerde
from ..topic import Topic
from ..transport.base import Headers
from . import operators as ops
from .aggregate import Change
from .old_values import DerivedOldValues
from .windows import Duration, duration_ms

if TYPE_CHECKING:
    from .ktable import KTable, Lookup

FullPolicy = Literal["emit", "shut_down"]
_PYTHON = PythonSerde()
# What a held entry costs besides its key and value, for max_bytes.
_OVERHEAD = 100


@dataclass(frozen=True)
class BufferConfig:
    """How much a suppression buffer holds (None: no bound) and what it does when over."""

    records: int | None = None
    bytes: int | None = None
    when_full: FullPolicy = "emit"

    @classmethod
    def max_records(cls, records: int) -> BufferConfig:
        return cls(records=records)

    @classmethod
    def max_bytes(cls, size: int) -> BufferConfig:
        """Bound by an estimate of the held keys' and values' serialized size."""
        return cls(bytes=size)

    @classmethod
    def unbounded(cls) -> BufferConfig:
        return cls()

    def with_max_records(self, records: int) -> BufferConfig:
        return dataclasses.replace(self, records=records)

    def with_max_bytes(self, size: int) -> BufferConfig:
        return dataclasses.replace(self, bytes=size)

    def emit_early_when_full(self) -> BufferConfig:
        return dataclasses.replace(self, when_full="emit")

    def shut_down_when_full(self) -> BufferConfig:
        return dataclasses.replace(self, when_full="shut_down")

    def shut_down_when_full_if_unbounded(self) -> BufferConfig:
        """An unbounded buffer is never full: its policy is moot (Kafka's strict config)."""
        if self.records is None and self.bytes is None:
            return self.shut_down_when_full()
        return self


@dataclass(frozen=True)
class Suppressed:
    """What `KTable.suppress` waits for: a time limit, or the window's close."""

    wait_ms: int | None  # None: until the window closes
    buffer: BufferConfig

    @classmethod
    def until_time_limit(cls, wait: Duration, buffer: BufferConfig | None = None) -> Suppressed:
        wait_ms = duration_ms(wait)
        if wait_ms < 0:
            raise ConfigError(f"until_time_limit: the wait must be >= 0, got {wait_ms} ms")
        return cls(wait_ms, buffer or BufferConfig.unbounded())

    @classmethod
    def until_window_closes(cls, buffer: BufferConfig | None = None) -> Suppressed:
        buffer = (buffer or BufferConfig.unbounded()).shut_down_when_full_if_unbounded()
        if buffer.when_full != "shut_down":
            raise ConfigError(
                "until_window_closes emits final results only: its buffer must "
                "shut_down_when_full() (an early emit would not be final)"
            )
        return cls(None, buffer)


class SuppressBuffer(Table):
    """`key -> [buffer time, prior value, new value, record timestamp, headers]`; keys
    route as their table's (a window key by its grouped key)."""

    def __init__(self, name: str, changelog: Topic) -> None:
        super().__init__(name, changelog)
        serde = changelog.key_serde
        self._route: Serde[Any] | None = serde.inner if isinstance(serde, WindowKeySerde) else None

    def routing_bytes(self, key: Any) -> bytes | None:
        if self._route is not None:
            return self._route.serialize(key[0])
        return super().routing_bytes(key)

    def routing_key(self, key: Any) -> Any:
        return key[0] if self._route is not None else key

    def key_bytes(self, key: Any) -> bytes:
        return self.changelog.key_serde.serialize(key) or b""


class _Suppress(ops.DslProcessor):
    """Buffers changes per key; emits those whose time has come, oldest first.

    Held keys are indexed in memory by (buffer time, key bytes), Kafka's buffer
    order, rebuilt from the store when the task opens.
    """

    def __init__(self, buffer: SuppressBuffer, wait_ms: int, config: BufferConfig, final: bool):
        self.buffer = buffer
        self.wait_ms = wait_ms
        self.config = config
        # Final results drop retractions of what they never emitted.
        self.final = final
        self._index: SortedList | None = None
        # With a max_bytes bound: each held key's estimated size, and their total.
        self._sizes: dict[Any, int] = {}
        self._bytes = 0
        self._now: int | None = None

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        if key is None:
            self.node.dropped(record, "null key")
            return
        ts = record.timestamp
        self._now = ts if self._now is None or ts > self._now else self._now
        index = self._held()
        held = self.buffer.get(key)
        if held is None:
            since = key.end_ms if self.final else ts
            index.add((since, self.buffer.key_bytes(key), key))
            row = [since, change.old, change.new, ts, record.headers]
        else:
            row = [held[0], held[1], change.new, ts, record.headers]
        self.buffer[key] = row
        self._track(key, change.new)
        self._enforce()

    def _held(self) -> SortedList:
        if self._index is None:
            self._index = SortedList()
            for key, row in self.buffer.items():
                self._index.add((row[0], self.buffer.key_bytes(key), key))
                self._track(key, row[2])
        return self._index

    def _track(self, key: Any, value: Any) -> None:
        """With max_bytes, an estimate of a held entry's size: its serialized key and
        value, plus a fixed overhead for its record context and times, about what
        Kafka Streams counts for a small record (a little over 100 bytes)."""
        if self.config.bytes is None:
            return
        size = len(self.buffer.key_bytes(key)) + len(_PYTHON.serialize(value) or b"") + _OVERHEAD
        self._bytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def _over(self) -> bool:
        config = self.config
        if config.records is not None and len(self._held()) > config.records:
            return True
        return config.bytes is not None and self._bytes > config.bytes

    def _enforce(self) -> None:
        index = self._held()
        assert self._now is not None
        expiry = self._now - self.wait_ms
        while index and index[0][0] <= expiry:
            self._emit(index.pop(0)[2])
        if self._over():
            if self.config.when_full == "shut_down":
                raise StateError(
                    f"suppress buffer {self.buffer.name!r} is over its bound "
                    f"({self.config}) and may not emit early: give it more room"
                )
            while index and self._over():
                self._emit(index.pop(0)[2])

    def _emit(self, key: Any) -> None:
        row = self.buffer.get(key)
        self._bytes -= self._sizes.pop(key, 0)
        if row is None:
            return
        self.buffer.delete(key)
        _since, prior, new, ts = row[:4]
        if new is None and self.final:
            return  # a retraction of a result final mode never emitted
        self.emit(Record(key, Change(new, prior), ts, _headers(row)))


def _headers(row: list[Any]) -> Headers:
    """A held entry's headers: those of the record that last updated it (none in a row
    buffered before rows kept headers)."""
    return row[4] if len(row) > 4 else ()


def suppress(table: KTable, suppressed: Suppressed, name: str | None) -> KTable:
    """The suppressed table: a node after `table`, with a buffer store of its own."""
    from .kstream import internal_serde
    from .ktable import KTable

    app = table.app
    final = suppressed.wait_ms is None
    if final:
        grace = table.suppress_grace_ms
        if grace is None:
            raise ConfigError(
                "until_window_closes() suppresses a windowed aggregation's table; this table "
                "has no windows (use until_time_limit())"
            )
        wait_ms = grace
    else:
        assert suppressed.wait_ms is not None
        wait_ms = suppressed.wait_ms
    node_name = app.graph.name("KTABLE-SUPPRESS", name)
    store = f"{node_name}-store"
    changelog = Topic(
        f"{app.id}-{store}-changelog",
        key_type=internal_serde(None, table.key_serde),
        value_type=_PYTHON,
        config={"cleanup.policy": "compact"},
    )
    buffer = SuppressBuffer(store, changelog)
    app.add_store(buffer)
    from .join_parts import stores_behind

    node = app.graph.add(
        "KTABLE-SUPPRESS",
        lambda: _Suppress(buffer, wait_ms, suppressed.buffer, final),
        (table.node,),
        name=node_name,
        stores=(buffer, *stores_behind(table.node)),
    )
    parent: Lookup = table.lookup

    def lookup(key: Any) -> ValueAndTimestamp | None:
        held = buffer.get(key)
        if held is None:
            return parent(key)
        return None if held[1] is None else ValueAndTimestamp(held[1], held[3])

    # Kafka's KTableSuppressProcessorSupplier asks its table for old values, with force.
    result = KTable(
        app,
        node,
        table.key_serde,
        table.value_serde,
        lookup,
        DerivedOldValues(table.old_values, sent=table.old_values.enable(True)),
    )
    result.suppress_grace_ms = table.suppress_grace_ms
    return result
