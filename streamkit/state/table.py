"""`app.table(...)`: a dict-like view that reaches the current task's store.

A table is sharded like its changelog: partition p of the table lives in task
`<sub>_p`, inside the SQLite file of that task. Agents read and write it as a
dict; which shard they touch is given by the task running them (a context
variable set when the agent's coroutine is created).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..errors import StateError
from ..topic import Topic

if TYPE_CHECKING:
    from ..serde import Serde
    from .task_store import TaskStore

# The stores of the task whose agent is running; set per agent coroutine.
current_stores: ContextVar[Mapping[str, TaskStore]] = ContextVar("streamkit_current_stores")

# The raw key of the input record being processed by the running agent or graph: a
# table write of that key belongs to the task by construction, whatever partitioner
# the record's producer used.
key_in_hand: ContextVar[Callable[[], bytes | None]] = ContextVar("streamkit_key_in_hand")

_MISSING: Any = object()


class Table:
    """Keys and values as declared; missing keys read as `default()` when a default is set."""

    def __init__(
        self,
        name: str,
        changelog: Topic,
        default: Callable[[], Any] | None = None,
        ttl_s: float | None = None,
        *,
        changelog_is_source: bool = False,
    ) -> None:
        self.name = name
        self.changelog = changelog
        # A KTable's store: its source topic is its changelog, so commits write none.
        self.changelog_is_source = changelog_is_source
        self.default = default
        # Keys not updated for this long are forgotten (and tombstoned in the changelog).
        self.ttl_s = ttl_s
        # The source topic whose partitioner places the table's keys (set with the
        # topology; None: the changelog's own).
        self.partitioned_by: Topic | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # How a shard treats rows; a windowed table differs in each of these. -------

    @property
    def value_serde(self) -> Serde[Any]:
        """How rows are stored: the changelog's values, unless the table says otherwise."""
        return self.changelog.value_serde

    def row_view(self, row: Any) -> Any:
        """A timestamped row as views show it: `ValueAndTimestamp`, or None for nothing."""
        from .timestamped import ValueAndTimestamp

        return ValueAndTimestamp(*row)

    def restored_value(self, raw: bytes | None, timestamp_ms: int) -> bytes | None:
        """A changelog record's value as the store keeps it."""
        return raw

    def routing_bytes(self, key: Any) -> bytes | None:
        """The bytes whose partition must be the task's (the key, as in its stream)."""
        return self.changelog.key_serde.serialize(key)

    def routing_key(self, key: Any) -> Any:
        """The part of a key that `routing_bytes` depends on: keys that share it share a
        task, so a shard checks it once (a window store: the grouped key, not each window)."""
        return key

    def row_time(self, key: Any, now_ms: int) -> int:
        """The time kept with a row: when it last changed."""
        return now_ms

    def restored_row_time(self, key_bytes: bytes, timestamp_ms: int) -> int:
        return timestamp_ms

    def expiry_cutoff(self, now_ms: int, stream_time_ms: int | None) -> int | None:
        """Rows whose time is below this are gone; None keeps everything."""
        return None if self.ttl_s is None else now_ms - int(self.ttl_s * 1000)

    @property
    def expiry_horizon_s(self) -> float | None:
        """How long rows live; expiry runs a few times per horizon."""
        return self.ttl_s

    # Expired keys of a TTL table are deleted through the changelog; windows are not
    # (their changelog deletes by time, as in Kafka Streams).
    tombstones_on_expiry = True
    # Whether rows are `ValueAndTimestamp` (timestamped.py): views show the value alone.
    timestamped = False
    # Whether a row's time is part of its key (a window's end) rather than when it
    # changed: then a key newer than every stored row is known absent without a read.
    row_time_in_key = False
    # Whether a row whose time fell below the expiry cutoff stays expired (the cutoff
    # only moves forward: stream time less a fixed retention), so that a commit need
    # not write such rows to the file.
    expiry_is_final = False

    def _store(self) -> TaskStore:
        # An agent's every table access starts here: one lookup when bound, the
        # explanations only when not.
        try:
            return current_stores.get()[self.name]
        except LookupError:
            raise self._unbound() from None

    def _unbound(self) -> StateError:
        stores = current_stores.get(None)
        if stores is None:
            return StateError(
                f"table {self.name!r} was used outside an agent; tables are sharded by "
                "task, so read and write them inside the agents that own them, and read "
                "them elsewhere with `await app.query(table, key)` (docs/querying.md)"
            )
        return StateError(
            f"table {self.name!r} is not bound to this agent: pass tables=[{self.name}] "
            "to @app.agent (streamkit binds tables it sees the agent's code use)"
        )

    # `counts[user] += 1; yield user, counts[user]` is three of these per record: they
    # reach the store without the call to `_store` (a fifth of their time).

    def __getitem__(self, key: Any) -> Any:
        try:
            store = current_stores.get()[self.name]
        except LookupError:
            raise self._unbound() from None
        value = store.get(key, _MISSING)
        if value is not _MISSING:
            return value
        if self.default is not None:
            return self.default()
        raise KeyError(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            store = current_stores.get()[self.name]
        except LookupError:
            raise self._unbound() from None
        store.set(key, value)

    def __delitem__(self, key: Any) -> None:
        store = self._store()
        if store.get(key, _MISSING) is _MISSING:
            raise KeyError(key)
        store.delete(key)

    def __contains__(self, key: Any) -> bool:
        return self._store().get(key, _MISSING) is not _MISSING

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._store().get(key, _MISSING)
        return default if value is _MISSING else value

    def set(self, key: Any, value: Any) -> None:
        self._store().set(key, value)

    def delete(self, key: Any) -> None:
        """Remove a key if present (a tombstone in the changelog)."""
        self._store().delete(key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """This task's keys and values, in the byte order of the serialized keys."""
        return self._store().range(None, None)

    def keys(self) -> Iterator[Any]:
        return (k for k, _ in self.items())

    def values(self) -> Iterator[Any]:
        return (v for _, v in self.items())

    def range(self, start: Any = None, end: Any = None) -> Iterator[tuple[Any, Any]]:
        """Keys in [start, end) by the byte order of their serialized form."""
        return self._store().range(start, end)
