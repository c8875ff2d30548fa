"""A GlobalKTable's store: the whole topic, every partition, in one SQLite file per worker.

Every worker keeps its own full copy, at `{data_dir}/{app_id}/global/{name}.sqlite`
(Kafka Streams' global state), with the next offset of each partition it reflects,
so a restart reads on from there instead of replaying the topic. Only the worker's
loader writes it; join processors read it synchronously, through a bounded dict of
decoded values in front of SQLite (a miss is remembered too: left joins ask for
absent keys again and again).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..topic import Topic
from .sqlite_store import SqliteStore

_ABSENT: Any = object()
_PREFIX = "partition:"


def global_store_path(state_dir: Path, name: str) -> Path:
    """`{data_dir}/{app_id}/global/{name}.sqlite`: beside the task directories, never one."""
    return state_dir / "global" / f"{name}.sqlite"


class Row(NamedTuple):
    """One decoded record of the global topic; `value` None is a tombstone."""

    key: Any
    key_bytes: bytes
    value: Any
    value_bytes: bytes | None
    timestamp: int


class GlobalStore:
    def __init__(self, name: str, topic: Topic, path: Path, cache_keys: int = 50_000) -> None:
        self.name = name
        self.topic = topic
        self.sqlite = SqliteStore(path)
        self._cache: dict[Any, Any] = {}
        self._cache_limit = cache_keys

    def __repr__(self) -> str:
        return f"<GlobalStore {self.name} at {self.sqlite.path}>"

    def open(self) -> bool:
        """Open or create the file; False when it was unreadable and had to be replaced."""
        return self.sqlite.open()

    def close(self) -> None:
        self.sqlite.close()
        self._cache.clear()

    # Checkpoints -------------------------------------------------------------

    def checkpoints(self) -> dict[int, int]:
        """Partition -> next offset the file does not reflect yet (none for a new file)."""
        rows = self.sqlite.db.execute(
            "SELECT name, value FROM meta WHERE name LIKE ?", (_PREFIX + "%",)
        )
        return {int(name.removeprefix(_PREFIX)): int(value) for name, value in rows}

    def wipe(self) -> None:
        """Forget every row and checkpoint (before a full replay)."""
        self.sqlite.wipe()
        self._cache.clear()

    # Writes (the loader alone) ---------------------------------------------------

    def apply(self, rows: Iterable[Row], positions: Mapping[int, int]) -> None:
        """Write a fetched batch (the last row of each key wins), then the partitions'
        next offsets.

        Two transactions, rows first: a crash between them leaves the offsets behind
        the rows, and replaying those records again ends in the same table (each
        key's last value wins), while offsets ahead of their rows would lose them.
        """
        latest = {row.key_bytes: row for row in rows}
        if latest:
            self.sqlite.write(((kb, r.value_bytes, r.timestamp) for kb, r in latest.items()), None)
            self._refresh(latest.values())
        if positions:
            db = self.sqlite.db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO meta(name, value) VALUES(?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    [(f"{_PREFIX}{p}", offset) for p, offset in positions.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _refresh(self, rows: Iterable[Row]) -> None:
        """Update the keys readers have cached; a load adds none (it would only churn)."""
        cache = self._cache
        for row in rows:
            try:
                if row.key in cache:
                    cache[row.key] = _ABSENT if row.value is None else row.value
            except TypeError:
                continue  # unhashable keys are never cached

    # Reads (any code of the worker) -------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The key's current value, or `default` when the table has none."""
        try:
            value = self._cache.get(key, None)
        except TypeError:  # an unhashable key: SQLite alone can answer
            return self._read(key, default)
        if value is None:
            value = self._remember(key, self._read(key, _ABSENT))
        return default if value is _ABSENT else value

    def _read(self, key: Any, default: Any) -> Any:
        raw = self.sqlite.get(self._key_bytes(key))
        return default if raw is None else self.topic.value_serde.deserialize(raw)

    def _key_bytes(self, key: Any) -> bytes:
        kb = self.topic.key_serde.serialize(key)
        if kb is None:
            raise ValueError(f"global table {self.name!r}: keys cannot be None")
        return kb

    def _remember(self, key: Any, value: Any) -> Any:
        try:
            if key not in self._cache and len(self._cache) >= self._cache_limit:
                self._cache.clear()
            self._cache[key] = value
        except TypeError:
            pass  # unhashable keys are not cached
        return value

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every key and value, in the byte order of the serialized keys."""
        key_serde, value_serde = self.topic.key_serde, self.topic.value_serde
        for kb, vb in self.sqlite.range():
            yield key_serde.deserialize(kb), value_serde.deserialize(vb)

    def __len__(self) -> int:
        return self.sqlite.count()
