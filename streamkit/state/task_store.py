"""One table's shard inside one task: a write-behind cache over its SQLite file.

Updates between commits stay in a dict, so a key updated a thousand times in a
commit interval costs one changelog record and one SQLite row (DESIGN.md
invariant 7). At commit the task sends the changed keys to the changelog, waits
for the broker's acknowledgement, then writes them to SQLite in one transaction
with the changelog offset they reach.

When the state outgrows the cache, the keys a batch's records will read are read
from the file before it, a few hundred to a query (`prefetch`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sortedcontainers import SortedList

from ..errors import SerdeError, StateError
from ..events import StreamTime
from ..topic import Topic
from ..transport.base import Headers, RawRecord, TopicPartition
from .sqlite_store import Change, SqliteStore, store_path
from .table import Table, key_in_hand

if TYPE_CHECKING:
    from ..topology import SubTopology, TaskId


class ChangelogWriter(Protocol):
    """Where a store sends its changes at commit: the task's record writer, whose
    producer (plain or transactional) the store need not know."""

    def write_raw(
        self,
        topic: Topic,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
        partition: int | None = None,
    ) -> None: ...


_DELETED: Any = object()
_NOT_READ: Any = object()
_ABSENT: Any = object()
Changes = list[Change]
# A batch whose keys needed this many reads of the file (the state has outgrown the
# cache) makes the next batch read its keys in a few queries first (`prefetch`).
PREFETCH_FROM_READS = 64
# When under half of what a prefetch read was then asked for (the table is not keyed
# by the records' keys), prefetching pauses for this many batches.
PREFETCH_PAUSE_BATCHES = 100
# Routing keys remembered as checked to be the task's; forgotten whole beyond this.
OWNED_KEYS = 50_000
# Rows a restore writes to the file per transaction, at most the write-behind cache's
# bound. A restore of 1.25 million scattered rows (a task's share of 5 million keys)
# took 7.4 us a record at a transaction per fetch (10,000 records), 5.4 at 20,000 rows
# (4.0 at 50,000, for 9 MB more memory per store while restoring); 250,000 rows: 3.4,
# 2.8 (2.7).
RESTORE_WRITE_ROWS = 20_000
# How often a table with a TTL looks for expired keys, at most.
EXPIRY_CHECK_S = 10.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def task_stores(
    task: TaskId,
    subtopology: SubTopology,
    state_dir: Path,
    clock: StreamTime,
    cache_keys: int = 50_000,
) -> dict[str, TaskStore]:
    """The shards of a task's tables, at the paths its active and standby copies share."""
    return {
        t.name: TaskStore(
            t,
            task.partition,
            str(task),
            SqliteStore(
                store_path(state_dir, task, t.name),
                expiring=t.expiry_horizon_s is not None,
                time_in_key=t.row_time_in_key,
            ),
            clock,
            cache_keys,
        )
        for t in subtopology.tables
    }


class TaskStore:
    def __init__(
        self,
        table: Table,
        partition: int,
        task_name: str,
        sqlite: SqliteStore,
        clock: StreamTime,
        clean_cache_keys: int = 50_000,
    ) -> None:
        self.table = table
        self.partition = partition
        self._task_name = task_name
        self.sqlite = sqlite
        self.changelog_tp = TopicPartition(table.changelog.name, partition)
        self._key_serde = table.changelog.key_serde
        self._value_serde = table.value_serde
        # Checks (and converts) a value at assignment: see Serde.as_stored.
        self._as_stored = getattr(self._value_serde, "as_stored", None)
        self._routed_by = table.partitioned_by or table.changelog
        # Whether a key is placed by its own bytes (not a windowed key's inner key).
        self._routes_by_key = type(table).routing_bytes is Table.routing_bytes
        # `table.routing_key`, None when that is the key itself.
        self._routing_key = None if self._routes_by_key else table.routing_key
        self._row_time = table.row_time
        # Whether a row's time is when it changed (not a window's end).
        self._row_time_is_now = type(table).row_time is Table.row_time
        self._dirty: dict[Any, Any] = {}
        # The changed keys' bytes, sorted, so that a range scan (a window fetch, a join
        # lookup) reads its slice of them, not every change since the last commit.
        # A SortedList: one insertion costs O(log n), where a list's insort moved up
        # to 50,000 entries per new key (a third of a windowed count's time). Keys join
        # it when a scan needs them (`_unsorted` until then): a table nothing scans (a
        # count, a tumbling window) pays no insertion per key.
        self._dirty_order: SortedList = SortedList()
        self._unsorted: list[bytes] = []
        # The changed (and staged) keys by their bytes, made once at the first change:
        # the partition check compares them, the range index and the commit reuse them.
        self._dirty_keys: dict[bytes, Any] = {}
        # Routing keys (`Table.routing_key`) whose partition was checked to be the task's:
        # a window store's key is checked once, not at every window it opens.
        self._owned: set[Any] = set()
        # Exactly-once: changes whose transaction committed but that the file does not
        # hold yet (it is written about once a second, not per 100 ms transaction), by
        # key and serialized, with the changelog offset they reach. Their keys stay in
        # `_dirty_order` until written, so range scans see them.
        self._staged: dict[Any, Any] = {}
        self._staged_changes: dict[bytes, Change] = {}
        self._staged_end: int | None = None
        self._expires = table.expiry_horizon_s is not None
        self._time_keyed = self._expires and table.row_time_in_key
        # Values known to match the file (persisted or read), so that a key's first
        # read after a commit is no SELECT. Dropped whole when it outgrows its bound;
        # none for tables whose rows expire (the file decides what is still alive).
        self._clean: dict[Any, Any] = {}
        self._clean_limit = 0 if self._expires else clean_cache_keys
        # A restore's rows not written yet (by key), and the changelog offset they reach.
        self._restoring: dict[bytes, Change] = {}
        self._restored_to: int | None = None
        self._restore_write_rows = min(RESTORE_WRITE_ROWS, clean_cache_keys)
        kind = type(table)
        self._plain_restore = (
            kind.restored_value is Table.restored_value
            and kind.restored_row_time is Table.restored_row_time
        )
        # Serialized bytes per change at the last commit; a guess until then.
        self._bytes_per_change = 100.0
        self._next_expiry_check = 0.0
        self._clock = clock
        # Batched reads: the serialized values (None: not in the file) of the keys the
        # batch in hand was expected to read, and how reads went in the batch.
        self._prefetched: dict[Any, bytes | None] = {}
        self._prefetch_asked = self._prefetch_used = self._file_reads = 0
        self._prefetch_paused = self._last_batch_reads = 0
        # The changelog's end as last seen by a restore or a standby's catching up:
        # with the file's checkpoint, how far behind a copy is (queries' lag).
        self.changelog_end: int | None = None

    def _since_ms(self) -> int:
        """Rows whose time is below this are expired (0: the table keeps everything)."""
        if not self._expires:
            return 0
        return self.table.expiry_cutoff(_now_ms(), self._clock.ms) or 0

    # Reads and writes from agents ------------------------------------------

    def get(self, key: Any, missing: Any = None, *, remember: bool = True) -> Any:
        """The key's value, or `missing`. `remember=False` leaves the read cache
        alone: a query's reads, and reads of a copy that a restore or standby still
        writes to the file behind the cache's back. (`missing` defaults to None so that
        a join's lookup per record is this bound method, not a partial with a keyword,
        which cost 0.18 us a call more.)"""
        if self._expires:
            # The expiry cutoff is worked out only for a row found (or read from the
            # file): a window opened by the record in hand, most of a windowed
            # count's reads, is known absent without it.
            value = self._dirty.get(key, _ABSENT)
            if value is _ABSENT:
                if self._time_keyed and not self._staged:
                    # `_newer_than_stored`, inline: a new window, nowhere yet, is the
                    # commonest read.
                    latest = self.sqlite.latest_row_time
                    if latest is None or self._row_time(key, 0) > latest:
                        return missing
                value = self._stored(key, None, remember)
            if value is _ABSENT or value is _DELETED:
                return missing
            now = _now_ms()
            since = self.table.expiry_cutoff(now, self._clock.ms) or 0
            return missing if since > 0 and self._row_time(key, now) < since else value
        # A key changed in this commit interval (every read after the first write of
        # a `counts[user] += 1`) costs one dict lookup.
        value = self._dirty.get(key, _ABSENT)
        if value is _ABSENT:
            value = self._stored(key, 0, remember)
        return missing if value is _ABSENT or value is _DELETED else value

    def _stored(self, key: Any, since: int | None, remember: bool) -> Any:
        """A key not changed since the last commit: staged, cached, prefetched or read
        from the file (rows whose time is below `since`, the expiry cutoff worked out
        now if None, are not); _ABSENT if none has it."""
        if self._staged:
            value = self._staged.get(key, _ABSENT)
            if value is not _ABSENT:
                return value
        value = self._clean.get(key, _ABSENT)
        if value is not _ABSENT:
            return value
        if self.sqlite.empty:
            return _ABSENT  # a new store: no read of SQLite for what is not there
        if self._time_keyed and self._newer_than_stored(key):
            return _ABSENT  # a new window: likewise
        raw = self._prefetched.pop(key, _NOT_READ) if self._prefetched else _NOT_READ
        if raw is _NOT_READ:
            self._file_reads += 1
            if since is None:
                since = self._since_ms()
            raw = self.sqlite.get(self._key_bytes(key), since)
        else:
            self._prefetch_used += 1
        if raw is None:
            return _ABSENT
        value = self._value_serde.deserialize(raw)
        if remember:
            self._remember(key, value)
        return value

    def prefetch(self, keys: Iterable[Any]) -> None:
        """Before a batch: read the batch's keys that memory does not hold from the file
        in a few queries (`SqliteStore.get_many`) rather than one at a time as they are
        asked for. Only once the last batch needed PREFETCH_FROM_READS reads of the file
        (state larger than the cache), and only while what it reads is then asked for
        (the table is keyed by the records' keys, as `counts[user]` is)."""
        if self._prefetch_paused:
            self._prefetch_paused -= 1
            return
        if self._time_keyed or self._last_batch_reads < PREFETCH_FROM_READS:
            return
        dirty, staged, clean = self._dirty, self._staged, self._clean
        serialize = self._key_serde.serialize
        wanted: dict[Any, bytes] = {}
        try:
            for key in keys:
                if key in wanted or key in dirty or key in clean or key in staged:
                    continue
                wanted[key] = serialize(key)
        except Exception:  # not this table's kind of key: the records are not its rows
            self._prefetch_paused = PREFETCH_PAUSE_BATCHES
            return
        if None in wanted:  # nor are records without a key
            self._prefetch_paused = PREFETCH_PAUSE_BATCHES
            return
        found = self.sqlite.get_many(list(wanted.values()), self._since_ms())
        self._prefetched = {key: found.get(kb) for key, kb in wanted.items()}
        self._prefetch_asked = len(wanted)

    def end_batch(self) -> None:
        """After a batch: forget what its prefetch read, and judge whether it helped."""
        if self._prefetch_asked and self._prefetch_used * 2 < self._prefetch_asked:
            self._prefetch_paused = PREFETCH_PAUSE_BATCHES
        self._last_batch_reads = self._file_reads + self._prefetch_used
        self._prefetched = {}
        self._prefetch_asked = self._prefetch_used = self._file_reads = 0

    def lag(self) -> int:
        """Changelog records not in the file yet, as of the last look at the end."""
        return max(0, (self.changelog_end or 0) - (self.sqlite.checkpoint() or 0))

    def _newer_than_stored(self, key: Any) -> bool:
        latest = self.sqlite.latest_row_time
        return latest is None or self.table.row_time(key, 0) > latest

    def _remember(self, key: Any, value: Any) -> Any:
        if len(self._clean) >= self._clean_limit:
            self._clean.clear()
            if not self._clean_limit:
                return value
        self._clean[key] = value
        return value

    def set(self, key: Any, value: Any) -> None:
        if value is None:
            raise StateError(
                f"table {self.table.name!r}: None is a deletion in a changelog; use del"
            )
        if self._as_stored is not None:
            try:
                value = self._as_stored(value)
            except SerdeError as exc:
                raise StateError(
                    f"table {self.table.name!r}: cannot store the value for key {key!r}: {exc}"
                ) from None
        # `_change`, inline: a frame less on every write.
        dirty = self._dirty
        if key not in dirty and key not in self._staged:
            self._index(key)
        dirty[key] = value

    def delete(self, key: Any) -> None:
        self._change(key, _DELETED)

    def _change(self, key: Any, value: Any) -> None:
        # A key changed before in this commit interval was checked and indexed then:
        # a hot key costs a dict write, not a serialization and a partitioner call.
        if key not in self._dirty and key not in self._staged:
            self._index(key)
        self._dirty[key] = value

    def _index(self, key: Any) -> None:
        """A key's first change since the commit: serialized once (for the partition
        check, the range index and the commit) and checked to be the task's."""
        kb = self._key_serde.serialize(key)
        if kb is None:
            raise StateError(f"table {self.table.name!r}: keys cannot be None")
        # A window's grouped key checked before (the owned set) needs no more.
        if self._routing_key is None or self._routing_key(key) not in self._owned:
            self._check_partition(key, kb)
        self._dirty_keys[kb] = key
        self._unsorted.append(kb)

    def range(self, start: Any, end: Any) -> Iterator[tuple[Any, Any]]:
        low = None if start is None else self._key_bytes(start)
        high = None if end is None else self._key_bytes(end)
        for kb, value in self.scan(low, high):
            yield self._key_serde.deserialize(kb), value

    def scan(
        self, low: bytes | None, high: bytes | None, limit: int | None = None
    ) -> list[tuple[bytes, Any]]:
        """Serialized keys in [low, high) with their values, in byte order; the first
        `limit` of them if given (a page of an interactive query).

        The file is read with a limit raised by the number of changed keys in the
        range: however many of those are deletions, the first `limit` live keys are
        then among what was read.
        """
        since = self._since_ms()
        changed = list(self._changed_order().irange(low, high, inclusive=(True, False)))
        read = None if limit is None else limit + len(changed)
        merged: dict[bytes, Any] = {
            k: self._value_serde.deserialize(v)
            for k, v in self.sqlite.range(low, high, since, read)
        }
        dirty, staged = self._dirty, self._staged
        for kb in changed:
            key = self._dirty_keys[kb]
            value = dirty[key] if key in dirty else staged[key]
            merged[kb] = _DELETED if self._expired(key, since) else value
        live = [(kb, merged[kb]) for kb in sorted(merged) if merged[kb] is not _DELETED]
        return live if limit is None else live[:limit]

    def _changed_order(self) -> SortedList:
        """The changed keys' bytes, sorted: those changed since the last scan go in
        now, so that a table no one scans (`counts[user] += 1`) sorts nothing."""
        if self._unsorted:
            self._dirty_order.update(self._unsorted)
            self._unsorted.clear()
        return self._dirty_order

    def _expired(self, key: Any, since_ms: int) -> bool:
        return since_ms > 0 and self.table.row_time(key, _now_ms()) < since_ms

    def _key_bytes(self, key: Any) -> bytes:
        kb = self._key_serde.serialize(key)
        if kb is None:
            raise StateError(f"table {self.table.name!r}: keys cannot be None")
        return kb

    def _check_partition(self, key: Any, key_bytes: bytes) -> None:
        """Refuse a key that belongs to another task (DESIGN.md invariant 5).

        The key of the record in hand is in its task by construction, whatever
        partitioner its producer used, so it is compared first (a bytes comparison,
        where the partitioner costs a hash that no cache holds for a million keys);
        another key is placed by the partitioner of the topic the table is sharded like.
        """
        owned = self._owned
        routing_key = key if self._routing_key is None else self._routing_key(key)
        if routing_key in owned:
            return
        routing = key_bytes if self._routes_by_key else self.table.routing_bytes(key)
        if routing is None:
            raise StateError(f"table {self.table.name!r}: keys cannot be None")
        in_hand = key_in_hand.get(None)
        by = self._routed_by
        if in_hand is not None and in_hand() == routing:
            if self._routes_by_key:
                # A plain table's key is checked once a commit interval anyway (its
                # next changes find it changed): remembering it would only take memory.
                return
            owner = self.partition
        else:
            owner = by.partitioner.of(routing, by.partitions)
        if owner == self.partition:
            # A window store's next window of the key (a tumbling count opens one per
            # key and window) is then a set lookup.
            if len(owned) >= OWNED_KEYS:
                owned.clear()
            owned.add(routing_key)
            return
        raise StateError(
            f"table {self.table.name!r}: key {key!r} belongs to partition {owner} by the "
            f"{by.partitioner.name} partitioner of topic {by.name!r}, but task "
            f"{self._task_name} holds partition {self.partition}. Re-key the stream first "
            "(yield it to a topic keyed by this key, or group_by/repartition) so that the "
            "record reaches the task that owns the key; if the topic's producers use "
            "another partitioner (librdkafka clients default to crc32), declare it: "
            "app.topic(..., partitioner='crc32')"
        )

    # Commit, from the task ---------------------------------------------------

    def dirty_count(self) -> int:
        return len(self._dirty)

    def dirty_bytes(self) -> float:
        """The changed keys' size, estimated from the last commit's serialized changes
        (values are serialized only at commit, so their size is not known before)."""
        return len(self._dirty) * self._bytes_per_change

    def send_changes(self, writer: ChangelogWriter) -> Changes:
        """Serialize the changed keys and send them to the changelog; keep them readable.
        Returns the changes for the file (`persist`, `stage`): those still alive."""
        if not self._dirty:
            return []
        serialize = self._value_serde.serialize
        row_time = None if self._row_time_is_now else self.table.row_time
        now = _now_ms()
        dirty = self._dirty
        changes: Changes = []
        # The keys' bytes are those made when each first changed (`_change`); the
        # index also holds staged keys (exactly-once), which have nothing new to send.
        for kb, key in self._dirty_keys.items():
            value = dirty.get(key, _ABSENT)
            if value is not _ABSENT:
                changes.append(
                    (
                        kb,
                        None if value is _DELETED else serialize(value),
                        now if row_time is None else row_time(key, now),
                    )
                )
        topic = self.table.changelog
        # A KTable's source topic already holds these changes: nothing to send.
        send = not self.table.changelog_is_source
        size = 0
        for kb, vb, _ in changes:
            if send:
                writer.write_raw(topic, kb, vb, (), now, self.partition)
            size += len(kb) + (len(vb) if vb is not None else 0)
        self._bytes_per_change = size / len(changes)
        return self._live(changes)

    def expire(self) -> None:
        """Drop expired rows: a TTL table through tombstones at commit, windows locally."""
        cutoff = self.table.expiry_cutoff(_now_ms(), self._clock.ms)
        horizon = self.table.expiry_horizon_s
        if cutoff is None or horizon is None or time.monotonic() < self._next_expiry_check:
            return
        self._next_expiry_check = time.monotonic() + min(EXPIRY_CHECK_S, horizon / 4)
        if self.table.tombstones_on_expiry:
            for kb in self.sqlite.expired(cutoff):
                key = self._key_serde.deserialize(kb)
                if key not in self._dirty:
                    self._change(key, _DELETED)
        else:
            self.sqlite.delete_before(cutoff)

    def persist(self, changes: Changes, changelog_end: int | None) -> None:
        """Write acknowledged changes to SQLite with the changelog offset they reach."""
        if not changes and not self._dirty:
            return
        self.sqlite.write(changes, changelog_end)
        if len(self._clean) + len(self._dirty) > self._clean_limit:
            self._clean.clear()
        if len(self._dirty) <= self._clean_limit:
            self._clean.update(self._dirty)
        self._dirty.clear()
        self._dirty_order.clear()
        self._unsorted.clear()
        self._dirty_keys.clear()

    def _live(self, changes: Changes) -> Changes:
        """The changes the file needs: not the rows of windows whose retention has passed
        (a replay's windows, mostly). The next expiry would delete them and no read sees
        them meanwhile, so they are not written, as Kafka Streams' window stores skip
        writes to expired segments; their changelog records went out all the same, and
        their bytes are not held until the commit's acknowledgement."""
        if not (self._time_keyed and self.table.expiry_is_final):
            return changes
        cutoff = self.table.expiry_cutoff(_now_ms(), self._clock.ms)
        if cutoff is None:
            return changes
        return [change for change in changes if change[2] >= cutoff]

    def stage(self, changes: Changes, changelog_end: int | None) -> None:
        """Exactly-once: the changes' transaction committed; keep them readable and
        write them to the file later (`write_staged`), with the offset they reach."""
        for change in changes:
            self._staged_changes[change[0]] = change
        self._staged.update(self._dirty)
        self._dirty.clear()
        if changelog_end is not None:
            self._staged_end = changelog_end

    def staged_count(self) -> int:
        return len(self._staged)

    def write_staged(self) -> None:
        """Write the committed changes to the file in one transaction, with the
        changelog offset of the last commit they came from."""
        if not self._staged_changes and not self._staged:
            return
        self.sqlite.write(self._staged_changes.values(), self._staged_end)
        if len(self._clean) + len(self._staged) > self._clean_limit:
            self._clean.clear()
        if len(self._staged) <= self._clean_limit:
            self._clean.update(self._staged)
        self._staged.clear()
        self._staged_changes.clear()
        self._reindex_dirty()

    def discard_uncommitted(self) -> None:
        """Drop the changes since the last commit (exactly-once: their transaction
        failed); what committed stays, staged or in the file."""
        self._dirty.clear()
        self._reindex_dirty()

    def _reindex_dirty(self) -> None:
        """Keep in the range index only the keys still changed or staged."""
        live = {
            kb: k for kb, k in self._dirty_keys.items() if k in self._dirty or k in self._staged
        }
        if len(live) != len(self._dirty_keys):
            self._dirty_keys = live
            self._dirty_order = SortedList(live)
            self._unsorted.clear()

    # Restore -----------------------------------------------------------------

    def apply_changelog(self, records: Sequence[RawRecord], next_offset: int) -> None:
        """Replay a fetched batch: only the last value of each key matters. Rows reach
        the file RESTORE_WRITE_ROWS at a time (`flush_restored`), not a transaction per
        fetch: scattered rows dirty most of a large file's pages whatever their number,
        so twice the rows to a transaction is about half the pages rewritten per row."""
        table = self.table
        if self._plain_restore:
            # A plain table keeps the changelog's bytes and time as they are: no call
            # per record.
            self._restoring.update(
                (r.key, (r.key, r.value, r.timestamp)) for r in records if r.key is not None
            )
        else:
            row_time, value_of = table.restored_row_time, table.restored_value
            self._restoring.update(
                (r.key, (r.key, value_of(r.value, r.timestamp), row_time(r.key, r.timestamp)))
                for r in records
                if r.key is not None
            )
        self._restored_to = next_offset
        if len(self._restoring) >= self._restore_write_rows:
            self.flush_restored()

    def flush_restored(self) -> None:
        """Write the replayed rows not in the file yet, with the offset they reach."""
        if self._restored_to is None:
            return
        self.sqlite.write(self._restoring.values(), self._restored_to)
        self._restoring = {}
        self._restored_to = None
