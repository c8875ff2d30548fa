"""Ceilings: the same jobs done with the bare libraries, as a separate process each.

    python -m benchmarks.ceilings passthrough --serde model --broker URL --input T --output T2 ...

Each runs like a worker would (a process of its own, observed from outside by the
benchmark), does the job with plain aiokafka, pydantic and sqlite3 and no
framework, and prints one JSON line with its own timing. They do what streamkit's
hot path must do at the least, in the cheapest way we know (DESIGN.md, "Transports"):

- passthrough: consume (`getmany`) -> `json.loads` + `json.dumps` (serde `json`), or
  pydantic `model_validate_json` + `model_dump_json` (serde `model`, the app's own
  work) -> produce with the batch API (`create_batch` / `send_batch`), one batch per
  partition per fetch; every ack awaited at the end. No group, no offset commits.
- count: the passthrough with the model, plus a per-partition write-behind counter:
  reads hit the dirty dict, then SQLite; every 10,000 records the dirty keys go to a
  changelog topic, outputs and changelog are acknowledged, then the keys are written
  to SQLite (WAL, one `executemany` per partition in a transaction).
- restore: fetch a changelog (10,000 records per `getmany`) and write the last value
  of each key of each batch to that partition's SQLite file, with the offset reached,
  until every partition's position reaches its fetch high watermark.
- sqlite: counter updates alone: `executemany` per 1,000 in WAL mode, and a dict
  write-behind flushed per 10,000.


Each sets Python's garbage collector as a streamkit worker does (`--gc-young-threshold`,
the default of the setting of that name): without it the bare loop pays for young
collections that promote every batch, and the ratios would flatter streamkit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamkit.settings import Settings

from .apps import Payment
from .data import payments
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
FETCH_RECORDS = 2_000  # per getmany, as streamkit's max_poll_records
FLUSH_EVERY = 10_000


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


async def _clients(
    args: argparse.Namespace, topic: str
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer | None, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers(args.broker),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1_048_576,
        # streamkit's own default: Tansu holds a fetch for its whole max wait, so the
        # client default (500 ms) would idle the ceiling and flatter every ratio.
        fetch_max_wait_ms=25,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(args.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    producer = None
    if args.kind != "restore":
        producer = AIOKafkaProducer(
            bootstrap_servers=servers(args.broker), acks="all", linger_ms=0, max_batch_size=65_536
        )
        await producer.start()
    return consumer, producer, tps


class _Batches:
    """One open batch per partition, filled without awaiting; `seal()` sends every
    batch, full or not (the batch API, in order per partition)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._open: dict[int, Any] = {}
        self._full: list[tuple[int, Any]] = []
        self.acks: list[asyncio.Future[Any]] = []

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
            self.acks.append(await send(batch, self._topic, partition=partition))

    async def acknowledged(self) -> None:
        await self.seal()
        acks, self.acks = self.acks, []
        await asyncio.gather(*acks)


def _transform(serde: str) -> Callable[[bytes], bytes]:
    if serde == "json":
        loads, dumps = json.loads, json.dumps

        def via_json(value: bytes) -> bytes:
            return dumps(loads(value), separators=(",", ":")).encode()

        return via_json
    validate = Payment.model_validate_json

    def via_model(value: bytes) -> bytes:
        return validate(value).model_dump_json().encode()

    return via_model


async def passthrough(args: argparse.Namespace) -> dict[str, Any]:
    consumer, producer, _ = await _clients(args, args.input)
    assert producer is not None
    transform = _transform(args.serde)
    out = _Batches(producer, args.output)
    done, began = 0, None
    try:
        while done < args.records:
            fetched = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            if began is None and fetched:
                began = _now()
            add = out.add
            for tp, records in fetched.items():
                p = tp.partition
                for r in records:
                    add(p, r.key, transform(r.value), r.timestamp)
                done += len(records)
            await out.seal()
        await out.acknowledged()
    finally:
        await consumer.stop()
        await producer.stop()
    return _timing(done, began)


async def count(args: argparse.Namespace) -> dict[str, Any]:
    consumer, producer, _ = await _clients(args, args.input)
    assert producer is not None
    validate = Payment.model_validate_json
    out = _Batches(producer, args.output)
    changelog = _Batches(producer, args.changelog)
    dbs = {p: open_db(Path(args.data_dir) / f"{p}.sqlite") for p in range(args.partitions)}
    dirty: dict[int, dict[bytes, int]] = {p: {} for p in dbs}
    changelog_end: dict[int, int] = dict.fromkeys(dbs, 0)
    select = "SELECT value FROM kv WHERE key=?"

    async def flush() -> None:
        for p, changes in dirty.items():
            for key, n in changes.items():
                changelog.add(p, key, b"%d" % n, None)
            changelog_end[p] += len(changes)
        await asyncio.gather(out.acknowledged(), changelog.acknowledged())
        for p, changes in dirty.items():
            if changes:
                db = dbs[p]
                db.execute("BEGIN")
                db.executemany(_UPSERT, [(k, b"%d" % n) for k, n in changes.items()])
                db.execute(_CHECKPOINT, (changelog_end[p],))
                db.execute("COMMIT")
                changes.clear()

    done, since_flush, began = 0, 0, None
    try:
        while done < args.records:
            fetched = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            if began is None and fetched:
                began = _now()
            for tp, records in fetched.items():
                p = tp.partition
                changes, db = dirty[p], dbs[p]
                for r in records:
                    validate(r.value)
                    key = r.key
                    n = changes.get(key)
                    if n is None:
                        row = db.execute(select, (key,)).fetchone()
                        n = 0 if row is None else int(row[0])
                    changes[key] = n = n + 1
                    out.add(p, key, b"%d" % n, r.timestamp)
                done += len(records)
                since_flush += len(records)
            await out.seal()
            if since_flush >= FLUSH_EVERY:
                await flush()
                since_flush = 0
        await flush()
    finally:
        await consumer.stop()
        await producer.stop()
        for db in dbs.values():
            db.close()
    return _timing(done, began)


async def restore(args: argparse.Namespace) -> dict[str, Any]:
    consumer, _, tps = await _clients(args, args.changelog)
    dbs = {tp: open_db(Path(args.data_dir) / f"restore-{tp.partition}.sqlite") for tp in tps}
    applied = 0
    began = _now()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in fetched.items():
                latest = {r.key: r.value for r in records}
                db = dbs[tp]
                db.execute("BEGIN")
                db.executemany(_UPSERT, latest.items())
                db.execute(_CHECKPOINT, (records[-1].offset + 1,))
                db.execute("COMMIT")
                applied += len(records)
            caught_up = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    caught_up = False
            if caught_up:
                break
    finally:
        await consumer.stop()
        for db in dbs.values():
            db.close()
    return _timing(applied, began)


def sqlite_counters(args: argparse.Namespace) -> dict[str, Any]:
    keys = [k for k, _ in payments(args.records, args.keys)]
    n = len(keys)
    # executemany per 1,000 updates, each an increment in SQL.
    db = open_db(Path(args.data_dir) / "executemany.sqlite")
    increment = (
        "INSERT INTO kv(key, value) VALUES(?, 1) ON CONFLICT(key) DO UPDATE SET value=value+1"
    )
    began = time.perf_counter()
    for i in range(0, n, 1_000):
        db.execute("BEGIN")
        db.executemany(increment, [(k,) for k in keys[i : i + 1_000]])
        db.execute("COMMIT")
    executemany_s = time.perf_counter() - began
    db.close()
    # A dict write-behind: reads from the dirty dict, then SQLite; flushed per 10,000.
    db = open_db(Path(args.data_dir) / "writebehind.sqlite")
    select = "SELECT value FROM kv WHERE key=?"
    began = time.perf_counter()
    dirty: dict[bytes, int] = {}
    for i, key in enumerate(keys, 1):
        value = dirty.get(key)
        if value is None:
            row = db.execute(select, (key,)).fetchone()
            value = 0 if row is None else int(row[0])
        dirty[key] = value + 1
        if i % FLUSH_EVERY == 0 or i == n:
            db.execute("BEGIN")
            db.executemany(_UPSERT, [(k, b"%d" % v) for k, v in dirty.items()])
            db.execute("COMMIT")
            dirty.clear()
    writebehind_s = time.perf_counter() - began
    db.close()
    return {
        "records": n,
        "executemany_per_1000_updates_per_s": n / executemany_s,
        "writebehind_per_10000_updates_per_s": n / writebehind_s,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceilings")
    parser.add_argument("kind", choices=["passthrough", "count", "restore", "sqlite"])
    parser.add_argument("--broker", default="")
    parser.add_argument("--input", default="")
    parser.add_argument("--output", default="")
    parser.add_argument("--changelog", default="")
    parser.add_argument("--serde", choices=["json", "model"], default="model")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--data-dir", default=".")
    parser.add_argument(
        "--gc-young-threshold",
        type=int,
        default=Settings.model_fields["gc_young_threshold"].default,
    )
    args = parser.parse_args()
    if args.gc_young_threshold:
        gc.set_threshold(args.gc_young_threshold, *gc.get_threshold()[1:])
    if args.kind == "sqlite":
        result = sqlite_counters(args)
    else:
        run = {"passthrough": passthrough, "count": count, "restore": restore}[args.kind]
        import uvloop

        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
