"""Ceilings: each workload's job done by the fastest bare program we know, a process each.

    python -m benchmarks.ceilings count --broker URL --input T --output T2 --changelog T3 ...

A ceiling runs like a worker (a process of its own, observed from outside the same
way) and does the same job with plain aiokafka, pydantic-core and sqlite3: no
framework, nothing a framework would add. What makes them fair (benchmarks/README.md,
"How the ceilings are measured", has a note per ceiling on why nothing faster is):

- The same serde calls streamkit makes: pydantic-core's validator and serializer
  directly (`__pydantic_validator__.validate_json`, `__pydantic_serializer__.to_json`),
  as `streamkit/serde.py` does; not the `model_*_json` wrappers, which add a Python
  frame and a str round trip per record.
- The same client settings: the consumer's fetch options and the producer's batch
  options are streamkit's own (`KafkaOptions`, with the run's worker options), and
  `max_poll_records` records per fetch. Outputs go out through the producer's
  batch API, one batch per partition per fetch, as streamkit's producer does.
- The same commit cadence: every `commit_interval_s` (the worker's), the outputs so
  far are acknowledged, then the changed state goes to the changelog and SQLite (one
  transaction per partition, with the changelog offset reached) and the input
  offsets are committed (a consumer group id with manually assigned partitions: the
  commit without the join). The commit runs beside the processing, not in its way,
  which is the fastest way to do it; the last one is awaited before the ceiling ends.
- The same state layers and bounds: a dict of changes since the last commit, a
  cache of values known to be in the file, bounded by `store_cache_max_keys` and
  cleared whole when full, and SQLite below (WAL, synchronous=NORMAL). A commit
  comes early when the changes reach that bound, as a task's does. Keys missing from
  memory are read from SQLite once per fetched batch (`WHERE key IN (...)`), the
  fastest way to read many.

Kinds: passthrough (validate and serialize each value), count (a count per key),
windowed_count (a count per key and 10 s tumbling window of the payment's time,
every update emitted), join (each payment with its user's row of a table read from
a co-partitioned topic), restore (a count changelog replayed into SQLite files).
Each prints one JSON line: its own timing and what it did.

Each sets Python's garbage collector as a streamkit worker does (`gc_young_threshold`):
without it the bare loop pays for young collections that promote every batch.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamkit.settings import Settings
from streamkit.state.task_store import RESTORE_WRITE_ROWS
from streamkit.transport.kafka.options import KafkaOptions

from .apps import Enriched, Payment, User
from .kafka import servers

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_UPSERT = (
    "INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"
)
_CHECKPOINT = (
    "INSERT INTO meta(name, value) VALUES('offset', ?) "
    "ON CONFLICT(name) DO UPDATE SET value=excluded.value"
)
_DEFAULTS = Settings.model_fields
WINDOW_MS = 10_000  # benchmarks/apps/windowed_count.py: TimeWindows(size=10, grace=5)
GRACE_MS = 5_000
READ_CHUNK = 500  # keys per `WHERE key IN (...)`
# Fetched records a restore hands over at once: streamkit's max_poll_records * 5.
RESTORE_FETCH = _DEFAULTS["max_poll_records"].default * 5


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _options(args: argparse.Namespace) -> KafkaOptions:
    return KafkaOptions.from_options(args.broker, json.loads(args.kafka_options))


async def _consumer(args: argparse.Namespace, tps: list[TopicPartition]) -> AIOKafkaConsumer:
    """Streamkit's fetch options; a group id only to commit offsets (no join)."""
    fetching = _options(args).fetching()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers(args.broker),
        group_id=args.group,
        auto_offset_reset="earliest",
        **{k: v for k, v in fetching.items() if k != "client_id"},
    )
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def _producer(args: argparse.Namespace) -> AIOKafkaProducer:
    """Streamkit's producer options (acks=all, its batch size, no linger)."""
    options = {k: v for k, v in _options(args).producer().items() if k != "client_id"}
    producer = AIOKafkaProducer(bootstrap_servers=servers(args.broker), **options)
    await producer.start()
    return producer


class Batches:
    """One open batch per partition, filled without awaiting; `seal()` sends every
    batch, full or not (the batch API, in order per partition). `take_acks()` hands
    over the deliveries so far; `ends(acks)` their offsets reached per partition."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._open: dict[int, Any] = {}
        self._full: list[tuple[int, Any]] = []
        self._acks: list[tuple[int, int, asyncio.Future[Any]]] = []

    def add(self, partition: int, key: bytes | None, value: bytes, ts: int | None) -> None:
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=ts) is None:
            batch.close()
            self._full.append((partition, batch))
            batch = self._open[partition] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=ts)

    async def seal(self) -> None:
        ready, self._full = self._full, []
        for partition, batch in self._open.items():
            if batch.record_count():
                batch.close()
                ready.append((partition, batch))
        self._open = {}
        send = self._producer.send_batch
        for partition, batch in ready:
            ack = await send(batch, self._topic, partition=partition)
            self._acks.append((partition, batch.record_count(), ack))

    def take_acks(self) -> list[tuple[int, int, asyncio.Future[Any]]]:
        acks, self._acks = self._acks, []
        return acks


async def acknowledged(acks: Sequence[tuple[int, int, asyncio.Future[Any]]]) -> dict[int, int]:
    """Wait for the deliveries; the offset after the last record, per partition."""
    ends: dict[int, int] = {}
    for partition, count, ack in acks:
        meta = await ack
        ends[partition] = max(ends.get(partition, 0), meta.offset + count)
    return ends


class Store:
    """One partition's table, in the layers and bounds of a streamkit TaskStore:
    `dirty` holds the changes since the last commit, `committing` those of the commit
    in flight (readable until they are in the file), `clean` values known to match
    the file, at most `cache_keys` of them and cleared whole when full. `prefetch`
    reads a batch's missing keys from SQLite in a few queries."""

    def __init__(
        self,
        db: sqlite3.Connection,
        cache_keys: int,
        absent: Any,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
    ) -> None:
        self.db = db
        self.cache_keys = cache_keys
        self.absent = absent
        self.encode, self.decode = encode, decode
        self.dirty: dict[bytes, Any] = {}
        self.committing: dict[bytes, Any] = {}
        self.clean: dict[bytes, Any] = {}
        self.sqlite_reads = 0
        # The rows of a commit the file needs (the windowed count: not windows that
        # closed meanwhile); None: all of them.
        self.keep: Callable[[dict[bytes, bytes]], Iterable[tuple[bytes, bytes]]] | None = None

    def prefetch(self, keys: Iterable[bytes], known_absent: Callable[[bytes], bool]) -> None:
        dirty, committing, clean = self.dirty, self.committing, self.clean
        missing = [
            k
            for k in dict.fromkeys(keys)
            if k not in dirty and k not in committing and k not in clean
        ]
        if not missing:
            return
        if len(clean) + len(missing) > self.cache_keys:
            clean.clear()
        absent, decode = self.absent, self.decode
        wanted = []
        for key in missing:
            if known_absent(key):
                clean[key] = absent
            else:
                wanted.append(key)
        for i in range(0, len(wanted), READ_CHUNK):
            chunk = wanted[i : i + READ_CHUNK]
            marks = ",".join("?" * len(chunk))
            found = dict(
                self.db.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", chunk)
            )
            self.sqlite_reads += len(chunk)
            for key in chunk:
                raw = found.get(key)
                clean[key] = absent if raw is None else decode(raw)

    def start_commit(self) -> dict[bytes, bytes]:
        """The changes to send and write, serialized; they stay readable meanwhile."""
        self.committing, self.dirty = self.dirty, {}
        encode = self.encode
        return {k: encode(v) for k, v in self.committing.items()}

    def persist(self, changes: dict[bytes, bytes], changelog_end: int | None) -> None:
        if changes:
            db = self.db
            db.execute("BEGIN")
            rows = changes.items() if self.keep is None else self.keep(changes)
            db.executemany(_UPSERT, sorted(rows))  # in key order: see SqliteStore
            if changelog_end is not None:
                db.execute(_CHECKPOINT, (changelog_end,))
            db.execute("COMMIT")
        clean = self.clean
        if len(clean) + len(self.committing) > self.cache_keys:
            clean.clear()
        if len(self.committing) <= self.cache_keys:
            clean.update(self.committing)
        self.committing = {}


class Committer:
    """Commits at the worker's cadence, beside the processing.

    1. the stores' changes go to the changelog (their keys stay readable);
    2. every output and changelog record so far is acknowledged;
    3. each store writes its changes to SQLite with the changelog offset reached;
    4. the input offsets are committed.
    Step 1 happens in line; 2 to 4 in a task of their own, one commit at a time.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        interval_s: float,
        outputs: Batches,
        changelog: Batches | None = None,
        stores: dict[int, Store] | None = None,
        after_persist: Callable[[int, dict[bytes, bytes]], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.after_persist = after_persist
        self.interval_s = interval_s
        self.outputs, self.changelog = outputs, changelog
        self.stores = stores or {}
        self.positions: dict[TopicPartition, int] = {}
        self.commits = 0
        self.changelog_records = 0
        self._next = time.monotonic() + interval_s
        self._job: asyncio.Task[None] | None = None

    def processed(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        self.positions[tp] = records[-1].offset + 1

    def due(self) -> bool:
        if time.monotonic() >= self._next:
            return True
        cap = max((len(s.dirty) for s in self.stores.values()), default=0)
        return bool(self.stores) and cap >= next(iter(self.stores.values())).cache_keys

    async def commit(self) -> None:
        if self._job is not None:
            await self._job
        self._next = time.monotonic() + self.interval_s
        # 1. Changelog records.
        changes = {p: store.start_commit() for p, store in self.stores.items()}
        if self.changelog is not None:
            for p, changed in changes.items():
                for key, value in changed.items():
                    self.changelog.add(p, key, value, None)
                self.changelog_records += len(changed)
            await self.changelog.seal()
        await self.outputs.seal()
        acks = self.outputs.take_acks()
        logged = self.changelog.take_acks() if self.changelog is not None else []
        self._job = asyncio.create_task(self._finish(acks, logged, changes, dict(self.positions)))

    async def _finish(
        self,
        acks: list[tuple[int, int, asyncio.Future[Any]]],
        logged: list[tuple[int, int, asyncio.Future[Any]]],
        changes: dict[int, dict[bytes, bytes]],
        positions: dict[TopicPartition, int],
    ) -> None:
        # 2. Acknowledged.
        await acknowledged(acks)
        ends = await acknowledged(logged)
        # 3. SQLite, with the changelog offsets reached.
        for p, changed in changes.items():
            self.stores[p].persist(changed, ends.get(p))
            if self.after_persist is not None:
                self.after_persist(p, changed)
        # 4. Input offsets.
        if positions:
            await self.consumer.commit(
                {tp: OffsetAndMetadata(o, "") for tp, o in positions.items()}
            )
        self.commits += 1

    async def close(self) -> None:
        await self.commit()
        if self._job is not None:
            await self._job


def _stores(
    args: argparse.Namespace,
    absent: Any,
    encode: Callable[[Any], bytes],
    decode: Callable[[bytes], Any],
    name: str,
) -> dict[int, Store]:
    return {
        p: Store(
            open_db(Path(args.data_dir) / f"{name}-{p}.sqlite"),
            args.cache_keys,
            absent,
            encode,
            decode,
        )
        for p in range(args.partitions)
    }


async def _run(
    args: argparse.Namespace,
    process: Callable[[int, Sequence[Any], Batches], None],
    stores: dict[int, Store] | None = None,
    consumer: AIOKafkaConsumer | None = None,
    after_persist: Callable[[int, dict[bytes, bytes]], None] | None = None,
) -> dict[str, Any]:
    """The loop every streaming ceiling shares: fetch, `process` each partition's
    records into output batches, send them, commit when due; until every input did."""
    tps = [TopicPartition(args.input, p) for p in range(args.partitions)]
    if consumer is None:
        consumer = await _consumer(args, tps)
    producer = await _producer(args)
    out = Batches(producer, args.output)
    changelog = Batches(producer, args.changelog) if stores else None
    committer = Committer(consumer, args.commit_interval_s, out, changelog, stores, after_persist)
    fetch = args.max_poll_records
    done, began = 0, None
    try:
        while done < args.records:
            fetched = await consumer.getmany(*tps, timeout_ms=500, max_records=fetch)
            if began is None and fetched:
                began = _now()
            for tp, records in fetched.items():
                process(tp.partition, records, out)
                committer.processed(tp, records)
                done += len(records)
            await out.seal()
            if committer.due():
                await committer.commit()
        await committer.close()
    finally:
        await consumer.stop()
        await producer.stop()
        for store in (stores or {}).values():
            store.db.close()
    result = _timing(done, began)
    result["commits"] = committer.commits
    result["changelog_records"] = committer.changelog_records
    if stores:
        result["sqlite_reads"] = sum(s.sqlite_reads for s in stores.values())
    return result


_validate = Payment.__pydantic_validator__.validate_json
_to_json = Payment.__pydantic_serializer__.to_json


async def passthrough(args: argparse.Namespace) -> dict[str, Any]:
    validate, to_json = _validate, _to_json

    def process(p: int, records: Sequence[Any], out: Batches) -> None:
        add = out.add
        for r in records:
            add(p, r.key, to_json(validate(r.value)), r.timestamp)

    return await _run(args, process)


def _never(_key: bytes) -> bool:
    return False


def _int_bytes(n: int) -> bytes:
    return b"%d" % n


async def count(args: argparse.Namespace) -> dict[str, Any]:
    stores = _stores(args, 0, _int_bytes, int, "count")
    validate = _validate

    def process(p: int, records: Sequence[Any], out: Batches) -> None:
        store = stores[p]
        store.prefetch([r.key for r in records], _never)
        dirty, committing, clean = store.dirty, store.committing, store.clean
        add = out.add
        for r in records:
            validate(r.value)
            key = r.key
            n = dirty.get(key)
            if n is None:
                n = committing.get(key)
                if n is None:
                    n = clean[key]
            dirty[key] = n = n + 1
            add(p, key, b"%d" % n, r.timestamp)

    return await _run(args, process, stores)


async def windowed_count(args: argparse.Namespace) -> dict[str, Any]:
    """Keys in the file and in memory are the window's start (8 bytes, big-endian)
    and the user: a window's rows are adjacent, so expiry is one range delete, and a
    window newer than any stored needs no read. Closed windows leave the file at
    each commit (the cache forgets them when it is next cleared: nothing reads them)."""
    stores = _stores(args, 0, _int_bytes, int, "windows")
    validate = _validate
    stream_time: dict[int, int] = {}
    newest_stored: dict[int, bytes] = dict.fromkeys(stores, b"")
    starts: dict[int, bytes] = {}

    def process(p: int, records: Sequence[Any], out: Batches) -> None:
        store = stores[p]
        now = stream_time.get(p, -1)
        rows = []
        for r in records:
            ts = int(validate(r.value).timestamp * 1000)
            start = ts - ts % WINDOW_MS
            prefix = starts.get(start)
            if prefix is None:
                prefix = starts[start] = start.to_bytes(8, "big")
            rows.append((prefix + r.key, r.key, ts, start))
        newest = newest_stored[p]
        store.prefetch([row[0] for row in rows], lambda k: k[:8] > newest)
        dirty, committing, clean = store.dirty, store.committing, store.clean
        add = out.add
        for window_key, key, ts, start in rows:
            if ts > now:
                now = ts
            if start + WINDOW_MS + GRACE_MS <= now:
                # Closed: streamkit drops (and counts) such a record; the data has none.
                raise SystemExit(f"partition {p}: a late record at {ts}")
            n = dirty.get(window_key)
            if n is None:
                n = committing.get(window_key)
                if n is None:
                    n = clean[window_key]
            dirty[window_key] = n = n + 1
            add(p, key, b"%d" % n, ts)
        stream_time[p] = now

    def closed_below(p: int) -> bytes:
        """Window starts below this are closed at the partition's stream time."""
        now = stream_time.get(p, 0)
        return max(0, now - WINDOW_MS - GRACE_MS + 1).to_bytes(8, "big")

    for p, store in stores.items():
        # Windows closed by the time their commit writes are not written (the expiry
        # would delete them next), as streamkit's window store skips them.
        def open_rows(changes: dict[bytes, bytes], p: int = p) -> Iterable[tuple[bytes, bytes]]:
            below = closed_below(p)
            return [(k, v) for k, v in changes.items() if k[:8] >= below]

        store.keep = open_rows

    def expire(p: int, changes: dict[bytes, bytes]) -> None:
        if changes:
            newest_stored[p] = max(newest_stored[p], max(k[:8] for k in changes))
        if p in stream_time:
            stores[p].db.execute("DELETE FROM kv WHERE key < ?", (closed_below(p),))

    return await _run(args, process, stores, after_persist=expire)


async def join(args: argparse.Namespace) -> dict[str, Any]:
    """The users table is read to its end first (a table loaded before the stream, as
    the worker's task has its rows before the payments that come after them in time),
    into the stores and their files; then each payment is joined with its user."""
    user_of = User.__pydantic_validator__.validate_json
    user_json = User.__pydantic_serializer__.to_json
    enriched_json = Enriched.__pydantic_serializer__.to_json
    stores = _stores(args, None, user_json, user_of, "users")
    table_tps = [TopicPartition(args.table, p) for p in range(args.partitions)]
    tps = [TopicPartition(args.input, p) for p in range(args.partitions)]
    consumer = await _consumer(args, [*table_tps, *tps])
    loaded = 0
    while True:
        fetched = await consumer.getmany(
            *table_tps, timeout_ms=500, max_records=args.max_poll_records
        )
        for tp, records in fetched.items():
            dirty = stores[tp.partition].dirty
            for r in records:
                dirty[r.key] = user_of(r.value)
            loaded += len(records)
        if await _caught_up(consumer, table_tps):
            break
    for store in stores.values():
        store.persist(store.start_commit(), None)
    validate = _validate

    def process(p: int, records: Sequence[Any], out: Batches) -> None:
        store = stores[p]
        store.prefetch([r.key for r in records], _never)
        dirty, committing, clean = store.dirty, store.committing, store.clean
        add = out.add
        for r in records:
            payment = validate(r.value)
            key = r.key
            user = dirty.get(key)
            if user is None:
                user = committing.get(key)
                if user is None:
                    user = clean[key]
            row = Enriched(
                user_id=payment.user_id, amount=payment.amount, tier=user.tier if user else None
            )
            add(p, key, enriched_json(row), r.timestamp)

    result = await _run(args, process, stores, consumer)
    result["table_rows"] = loaded
    return result


async def restore(args: argparse.Namespace) -> dict[str, Any]:
    """Fetch a changelog and write the last value of each key of each fetched batch to
    that partition's SQLite file, with the offset reached, until every partition's
    position reaches its fetch high watermark (Tansu under-reports ListOffsets)."""
    tps = [TopicPartition(args.changelog, p) for p in range(args.partitions)]
    consumer = await _consumer(args, tps)
    dbs = {tp: open_db(Path(args.data_dir) / f"restore-{tp.partition}.sqlite") for tp in tps}
    # Each partition's latest values, written RESTORE_WRITE_ROWS at a time (streamkit's
    # bound on what a restore holds), with the offset they reach.
    pending: dict[TopicPartition, dict[bytes, bytes]] = {tp: {} for tp in tps}
    reached: dict[TopicPartition, int] = {}

    def write(tp: TopicPartition) -> None:
        db = dbs[tp]
        db.execute("BEGIN")
        db.executemany(_UPSERT, sorted(pending[tp].items()))
        db.execute(_CHECKPOINT, (reached[tp],))
        db.execute("COMMIT")
        pending[tp] = {}

    applied = 0
    began = _now()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500, max_records=RESTORE_FETCH)
            for tp, records in fetched.items():
                latest = pending[tp]
                for r in records:
                    latest[r.key] = r.value
                reached[tp] = records[-1].offset + 1
                applied += len(records)
                if len(latest) >= RESTORE_WRITE_ROWS:
                    write(tp)
            if await _caught_up(consumer, tps):
                break
        for tp in tps:
            if pending[tp]:
                write(tp)
    finally:
        await consumer.stop()
        for db in dbs.values():
            db.close()
    return _timing(applied, began)


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    """Every partition's position at its fetch high watermark (never ListOffsets)."""
    for tp in tps:
        hw = consumer.highwater(tp)
        if hw is None or await consumer.position(tp) < hw:
            return False
    return True


def _timing(records: int, began: tuple[float, float] | None) -> dict[str, Any]:
    """Records, seconds and rate since `began` (monotonic, process time), and the CPU
    used meanwhile (1.0: one core kept busy)."""
    if began is None:
        return {"records": records, "seconds": None, "records_per_s": None, "cpu": None}
    seconds = time.monotonic() - began[0]
    return {
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "cpu": (time.process_time() - began[1]) / seconds,
    }


def _now() -> tuple[float, float]:
    return time.monotonic(), time.process_time()


KINDS = {
    "passthrough": passthrough,
    "count": count,
    "windowed_count": windowed_count,
    "join": join,
    "restore": restore,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceilings")
    parser.add_argument("kind", choices=list(KINDS))
    parser.add_argument("--broker", required=True)
    parser.add_argument("--input", default="")
    parser.add_argument("--output", default="")
    parser.add_argument("--changelog", default="")
    parser.add_argument("--table", default="", help="join: the users topic")
    parser.add_argument("--group", required=True, help="the group its offsets are committed in")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--data-dir", default=".")
    parser.add_argument("--kafka-options", default="{}", help="JSON: the workers' kafka_options")
    parser.add_argument(
        "--commit-interval-s", type=float, default=_DEFAULTS["commit_interval_s"].default
    )
    parser.add_argument("--cache-keys", type=int, default=_DEFAULTS["store_cache_max_keys"].default)
    parser.add_argument(
        "--max-poll-records", type=int, default=_DEFAULTS["max_poll_records"].default
    )
    parser.add_argument(
        "--gc-young-threshold", type=int, default=_DEFAULTS["gc_young_threshold"].default
    )
    args = parser.parse_args()
    if args.gc_young_threshold:
        gc.set_threshold(args.gc_young_threshold, *gc.get_threshold()[1:])
    import uvloop

    print(json.dumps(uvloop.run(KINDS[args.kind](args))), flush=True)


if __name__ == "__main__":
    main()
