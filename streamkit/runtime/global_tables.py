"""The worker's global tables: loaded whole before any task starts, then tailed.

Each worker reads every partition of each global topic with a partition reader (no
consumer group: every worker needs all of it) into its own store. `load()` reads
from each partition's checkpoint to the end the broker reports, re-asking when a
fetch comes back empty, and stops only once every position has reached it (some
brokers under-report the end: DESIGN.md, Transports). A checkpoint outside a
partition's offsets (the topic was recreated, or retention passed it) means a full
replay, with a warning. Bad records follow the topic's `on_error` policy; a record
without a key is counted and logged, as a KTable's source does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import BadInputError
from ..state.global_store import GlobalStore, Row, global_store_path
from ..topic import ErrorPolicy
from ..transport.base import PartitionReader, RawRecord, TopicPartition

if TYPE_CHECKING:
    from ..dsl.global_table import GlobalKTable
    from .task import TaskServices

log = logging.getLogger("streamkit.global")

TAIL_POLL_S = 0.5


class GlobalTables:
    def __init__(self, tables: Iterable[GlobalKTable], services: TaskServices) -> None:
        self._services = services
        self._tables = {t.topic.name: t for t in tables}
        self._stores = {
            t.topic.name: GlobalStore(
                t.name,
                t.topic,
                global_store_path(services.state_dir, t.name),
                services.settings.store_cache_max_keys,
            )
            for t in self._tables.values()
        }
        self._reader: PartitionReader | None = None
        self._tail: asyncio.Task[None] | None = None
        self._max_records = services.settings.max_poll_records * 5
        self._no_key: dict[str, int] = {}

    # Lifecycle ------------------------------------------------------------------

    async def load(self, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Read every global topic to its end, then let lookups reach the stores.

        False when `cancelled()` turned true first (the worker is stopping): the
        tables stay unreadable.
        """
        if not self._tables:
            return True
        began = time.monotonic()
        self._reader = reader = self._services.transport.reader()
        await reader.start()
        positions: dict[TopicPartition, int] = {}
        for store in self._stores.values():
            store.open()
            positions.update(await self._start_positions(store))
        reader.assign(positions)
        applied = await self.catch_up(cancelled)
        if cancelled():
            log.info("stopped while loading global tables (%d records read)", applied)
            return False
        for name, table in self._tables.items():
            table.bind(self._stores[name])
        log.info(
            "global tables loaded in %.2f s: %s (%d records read)",
            time.monotonic() - began,
            ", ".join(f"{s.name} {len(s)} keys" for s in self._stores.values()),
            applied,
        )
        return True

    async def _start_positions(self, store: GlobalStore) -> dict[TopicPartition, int]:
        reader = self._reader
        assert reader is not None
        topic = store.topic
        tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ranges = {tp.partition: await reader.offsets(tp) for tp in tps}
        checkpoints = store.checkpoints()
        outside = {
            p: c
            for p, c in checkpoints.items()
            if p not in ranges or not ranges[p][0] <= c <= ranges[p][1]
        }
        if outside:
            log.warning(
                "global table %s reflects offsets %s, outside the offsets of %s (%s): "
                "replaying the whole topic",
                store.name,
                outside,
                topic.name,
                ", ".join(f"[{p}] {a}..{b}" for p, (a, b) in sorted(ranges.items())),
            )
            store.wipe()
            checkpoints = {}
        elif not checkpoints:
            log.info("global table %s has no checkpoint: reading all of %s", store.name, topic.name)
        return {tp: checkpoints.get(tp.partition, ranges[tp.partition][0]) for tp in tps}

    async def catch_up(self, cancelled: Callable[[], bool] = lambda: False) -> int:
        """Read every partition up to the end it had when called; the records read."""
        reader = self._reader
        if reader is None:
            return 0
        tps = self._partitions()
        ends = {tp: (await reader.offsets(tp))[1] for tp in tps}
        applied = 0
        while (lagging := [tp for tp in tps if reader.position(tp) < ends[tp]]) and not cancelled():
            fetched = await reader.getmany(timeout_s=1.0, max_records=self._max_records)
            if fetched:
                applied += await self._apply(fetched)
            else:
                for tp in lagging:
                    ends[tp] = (await reader.offsets(tp))[1]
        return applied

    def _positions(self) -> dict[TopicPartition, int]:
        reader = self._reader
        assert reader is not None
        return {tp: reader.position(tp) for tp in self._partitions()}

    def _partitions(self) -> list[TopicPartition]:
        return [
            TopicPartition(name, p)
            for name, store in self._stores.items()
            for p in range(store.topic.partitions)
        ]

    def start_tailing(self, on_failure: Callable[[BaseException], None]) -> None:
        """Keep applying new records in the background; a failure goes to `on_failure`."""
        if self._reader is not None:
            self._tail = asyncio.create_task(self._run_tail(on_failure), name="global tables")

    async def _run_tail(self, on_failure: Callable[[BaseException], None]) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                fetched = await reader.getmany(timeout_s=TAIL_POLL_S, max_records=self._max_records)
                if fetched:
                    await self._apply(fetched)
        except Exception as exc:
            log.error("global tables stopped following their topics: %s", exc)
            on_failure(exc)

    async def stop(self) -> None:
        """Stop tailing, unbind the tables and close the stores."""
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
        for table in self._tables.values():
            table.unbind()
        reader, self._reader = self._reader, None
        try:
            if reader is not None:
                await reader.stop()
        finally:
            for store in self._stores.values():
                store.close()

    # Applying fetched records -------------------------------------------------------

    async def _apply(self, fetched: Mapping[TopicPartition, Sequence[RawRecord]]) -> int:
        """Decode and store each partition's batch with the position it reaches.

        A bad record under the `fail` policy stops here: the records before it are
        stored and checkpointed, so a restart fails on that record again.
        """
        reader = self._reader
        assert reader is not None
        applied = 0
        for tp, records in fetched.items():
            store = self._stores[tp.topic]
            rows, routed, failure = self._decode(store, records)
            if routed and store.topic.on_error is ErrorPolicy.DEAD_LETTER:
                # Dead letters are acknowledged before the offset moves past them.
                await self._services.writer.flush()
            if failure is None:
                reached, done = reader.position(tp), len(records)
            else:
                reached = failure.offset
                done = sum(1 for r in records if r.offset < reached)
            store.apply(rows, {tp.partition: reached})
            self._services.metrics.records_processed.labels(tp.topic, "global").inc(done)
            applied += done
            if failure is not None:
                # Read it again next time: under `fail` nothing after it may slip by.
                reader.assign({**self._positions(), tp: failure.offset})
                raise failure
        return applied

    def _decode(
        self, store: GlobalStore, records: Sequence[RawRecord]
    ) -> tuple[list[Row], int, BadInputError | None]:
        topic = store.topic
        failures = self._services.failures
        rows: list[Row] = []
        routed = 0
        for record in records:
            if record.key is None:
                self._count_no_key(store, record)
                continue
            stage = "key deserialization"
            try:
                key = topic.key_serde.deserialize(record.key)
                # The store is keyed as lookups serialize keys, whatever bytes came in.
                key_bytes = topic.key_serde.serialize(key)
                stage = "value deserialization"
                value = topic.value_serde.deserialize(record.value)
            except Exception as exc:
                try:
                    failures.bad_input(
                        record, exc, f"global table {store.name}: {stage}", topic.on_error
                    )
                except BadInputError as bad:
                    return rows, routed, bad
                routed += 1
                continue
            if key_bytes is None:  # a key that decodes to None (JSON null, say)
                self._count_no_key(store, record)
                continue
            # A value that decodes to None (JSON null, say) deletes, as a tombstone does.
            raw = None if value is None else record.value
            rows.append(Row(key, key_bytes, value, raw, record.timestamp))
        return rows, routed, None

    def _count_no_key(self, store: GlobalStore, record: RawRecord) -> None:
        self._services.metrics.dropped_records.labels(store.name, "null key").inc()
        count = self._no_key[store.name] = self._no_key.get(store.name, 0) + 1
        if count % 1000 == 1:  # the first, then every 1000th
            log.warning(
                "global table %s dropped %s[%d]@%d: a record without a key has no row "
                "(%d so far; metric streamkit_dropped_records)",
                store.name,
                record.topic,
                record.partition,
                record.offset,
                count,
            )
