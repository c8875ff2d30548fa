"""A task: the coroutine that owns a (sub-topology, partition)'s queues and agents.

Its lifecycle (open, suspend, resume, close), the processing and the commit are here:
it takes fetched chunks from its `PartitionGroup` (partition_group.py: lowest
timestamp first when it has several), decodes them, runs them through its agents
and processor graphs, and commits: outputs flushed and acknowledged first, input
offsets second (DESIGN.md invariant 4). Its stores are locked and restored by its
`StateManager` (state_manager.py) before the first record.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path

from ..errors import (
    BadInputError,
    CommitRejected,
    ProducerFenced,
    RecordError,
    TransactionAborted,
)
from ..events import Event, StreamTime
from ..metrics import Metrics
from ..serde import bytes_reader
from ..settings import Settings
from ..state.restore_listener import RestoreListener
from ..state.task_store import TaskStore, task_stores
from ..topology import SubTopology, TaskId
from ..transport.base import (
    Consumer,
    RawRecord,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from .agent_runner import AgentRunner
from .failures import FailureRouter
from .graph_runner import GraphRunner, wall_clock_ms
from .partition_group import HELD_BACK_RECHECK_S, Chunks, PartitionGroup
from .record_writer import RecordWriter
from .state_manager import StateManager

log = logging.getLogger("streamkit.task")

# Exactly-once: how often committed changes are written to the state files (a
# transaction commits every 100 ms; the file need not follow each one).
STATE_FILE_INTERVAL_S = 1.0

_timestamp = attrgetter("timestamp")
_offset = attrgetter("offset")


class TaskState(StrEnum):
    CREATED = "created"
    RESTORING = "restoring"  # replaying changelogs into its stores; no input yet
    RUNNING = "running"
    SUSPENDED = "suspended"  # revoked in a rebalance; resumed if it comes back
    CLOSED = "closed"


@dataclass(frozen=True)
class TaskServices:
    """What a task borrows from its worker; the task owns nothing of these."""

    transport: Transport
    consumer: Consumer
    writer: RecordWriter
    failures: FailureRouter
    metrics: Metrics
    settings: Settings
    state_dir: Path  # data_dir / app_id
    app_id: str = ""
    # Wall-clock time in ms: punctuations and tests that drive time read it here.
    wall_clock: Callable[[], int] = wall_clock_ms
    restore_listener: RestoreListener = field(default_factory=RestoreListener)


class Task:
    def __init__(
        self,
        task_id: TaskId,
        subtopology: SubTopology,
        partitions: set[TopicPartition],
        services: TaskServices,
    ) -> None:
        self.id = task_id
        self.partitions = frozenset(partitions)
        self.state = TaskState.CREATED
        self._services = services
        self._partition_group = PartitionGroup(
            partitions, services.settings.partition_buffer_records, services.consumer
        )
        self._topics = {t.name: t for t in subtopology.sources}
        self._clock = StreamTime()
        settings = services.settings
        # Exactly-once: a transactional producer of the task's own, bound to the task
        # by its id, so that the next owner's InitProducerId fences this one.
        self.producer: TransactionalProducer | None = None
        self._writer, self._failures = services.writer, services.failures
        if settings.exactly_once:
            self.producer = services.transport.transactional_producer(
                f"{services.app_id}-{task_id}", settings.transaction_timeout_ms
            )
            self.producer.on_delivery_failure = services.metrics.producer_failed
            self._writer = RecordWriter(self.producer)
            self._failures = services.failures.with_writer(self._writer)
            # Nothing is fetched for it until its producer has fenced the previous
            # owner and it has read the committed offsets again (`_read_from_committed`).
            for tp in self.partitions:
                services.consumer.pause(tp)
        self.fenced = False
        self._stores = task_stores(
            task_id,
            subtopology,
            services.state_dir,
            self._clock,
            services.settings.store_cache_max_keys,
        )
        self._graphs = [
            GraphRunner(
                g,
                services.app_id,
                str(task_id),
                task_id.partition,
                self._writer,
                self._failures,
                self._raw_of,
                self._stores,
                self._clock,
                services.metrics,
                services.wall_clock,
                self._partition_group.quiet_ms,
            )
            for g in subtopology.graphs
        ]
        self._runners: list[AgentRunner | GraphRunner] = [
            AgentRunner(
                a,
                str(task_id),
                self._writer,
                self._failures,
                self._raw_of,
                self._stores,
                self._clock,
                None if set(a.sources) == set(subtopology.sources) else a.sources,
            )
            for a in subtopology.agents
        ]
        self._runners.extend(self._graphs)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._suspend_done: asyncio.Future[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._uncommitted = False
        # By (topic, partition): a TopicPartition, or a plain tuple for `_raw_of`.
        self._in_hand: dict[tuple[str, int], Sequence[RawRecord]] = {}
        self._next_commit = 0.0
        self._next_file_write = 0.0
        self._revoked_while_restoring = False
        # A stateless at-least-once task's periodic commit, acknowledging and committing
        # beside the processing (`commit(wait=False)`).
        self._commit_job: asyncio.Task[None] | None = None
        self._state_manager = StateManager(
            task_id, self._stores, services, cancelled=lambda: self._closing
        )
        # Metric children bound once: the hot path pays an increment per chunk.
        metrics, name = services.metrics, str(task_id)
        processed = metrics.records_processed
        self._processed = {tp: processed.labels(tp.topic, name) for tp in partitions}
        self._batch_seconds = metrics.batch_seconds.labels(name)
        self._commit_seconds = metrics.commit_seconds.labels(name)

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.state}>"

    @property
    def restore_lag(self) -> int | None:
        """Changelog records still to restore, while restoring; None once running.

        A task mid-restore has its checkpoints far from the changelogs' ends: the
        leader must not take this member for caught up (warm-ups, moves)."""
        if self.state not in (TaskState.CREATED, TaskState.RESTORING):
            return None
        return self._state_manager.restore_left()

    @property
    def restored_records(self) -> int:
        """Changelog records the restore applied to the task's stores."""
        return self._state_manager.restored_records

    # Called by the worker's fetch loop -----------------------------------------

    def enqueue(self, tp: TopicPartition, records: Sequence[RawRecord]) -> bool:
        """Queue fetched records; True when the partition should be paused."""
        full = self._partition_group.enqueue(tp, records)
        self._wakeup.set()
        return full

    def stores(self) -> Mapping[str, TaskStore]:
        """The task's table shards by table name (for the test driver and status)."""
        return self._stores

    def has_queued(self) -> bool:
        return self._partition_group.has_queued()

    def buffered_records(self) -> int:
        """Records fetched but not yet taken: bounded by the partition queues' capacity."""
        return self._partition_group.buffered_records()

    def first_fetched(self) -> dict[TopicPartition, int]:
        """The first offset fetched of each partition, since the task started or resumed."""
        return self._partition_group.first_fetched()

    def paused_partitions(self) -> int:
        """Partitions whose full queue paused them in the consumer (back-pressure)."""
        return self._partition_group.paused_partitions()

    def processed_positions(self) -> dict[TopicPartition, int]:
        """Per input partition, the offset of its next record to process, where known:
        processed so far, or else the first fetched (safe to call from another thread)."""
        positions = self._partition_group.first_fetched()
        positions.update(self._positions)
        return positions

    def progress(self) -> list[tuple[TopicPartition, int, int]]:
        """(partition, processed position, records fetched but not processed)."""
        out = []
        for tp, (first, end) in self._partition_group.fetched().items():
            position = self._positions.get(tp, first)
            out.append((tp, position, max(0, end - position)))
        return out

    def request_stop(self) -> None:
        """Finish the batch in hand, commit and close."""
        self._closing = True
        self._wakeup.set()

    async def suspend(self) -> None:
        """Finish the batch in hand, commit, and drop what is queued (a rebalance began).

        The agents stay alive: if the task comes back to this worker it resumes
        where it was; if not, the coordinator closes it.
        """
        if self.state in (TaskState.CREATED, TaskState.RESTORING):
            self._revoked_while_restoring = True
            self._partition_group.clear()
            return
        if self.state is not TaskState.RUNNING:
            return
        self._suspend_done = asyncio.get_running_loop().create_future()
        self._wakeup.set()
        await self._suspend_done

    def resume(self) -> None:
        """Process again, from where the task got to.

        The consumer fetches a partition it is given again from the group's committed
        offset. If the task's last commit of offsets was refused (the group had moved
        on while it committed), everything before its positions is done all the same:
        outputs acknowledged, state in the changelog and the file. It goes on from its
        positions, instead of applying those records a second time (at-least-once;
        under exactly-once a refused commit aborts the transaction and the task is
        started anew from the committed offsets).
        """
        self._revoked_while_restoring = False
        if self.state is TaskState.SUSPENDED:
            if self._uncommitted and self.producer is None:
                consumer = self._services.consumer
                for tp, offset in self._positions.items():
                    consumer.seek(tp, offset)
            self.state = TaskState.RUNNING
            self._wakeup.set()

    # The task's own coroutine --------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._services.settings.commit_interval_s
        try:
            try:
                await self.open()
                self._next_commit = loop.time() + interval
                while not self._closing:
                    self._wakeup.clear()
                    if self._suspend_done is not None:
                        await self._enter_suspension()
                    if self.state is TaskState.SUSPENDED:
                        await self._wait(None)
                        continue
                    self.punctuate_wall_clock()
                    chunks = self._partition_group.take_chunks()
                    if chunks:
                        await self._process(chunks)
                        if self._cache_full() or self._commit_requested():
                            await self.commit()
                    else:
                        idle = self._idle_timeout(loop.time())
                        if self._partition_group.held_back:
                            # Nothing arrives to wake it when the partition it waits
                            # for turns out to be at its end: look again soon.
                            idle = (
                                HELD_BACK_RECHECK_S
                                if idle is None
                                else min(idle, HELD_BACK_RECHECK_S)
                            )
                        await self._wait(idle)
                    if self._commit_job is not None and self._commit_job.done():
                        await self._commit_finished()  # raises what it failed with
                    if self._uncommitted and loop.time() >= self._next_commit:
                        await self.commit(wait=False)
                        self._next_commit = loop.time() + interval
                await self.close()
            except RecordError:
                await self.commit()  # everything before the failed record
                raise
        except ProducerFenced as exc:
            # Another worker owns the task now; its work since the last commit is the
            # new owner's to redo. Not the worker's failure: its other tasks go on.
            self.fenced = True
            log.warning(
                "task %s was fenced (%s): it closes and drops its uncommitted state; "
                "its new owner processes the records since the last commit",
                self.id,
                exc,
            )
        finally:
            if self._commit_job is not None and not self._commit_job.done():
                # Ended by an error: what it did not commit is redone by the next owner.
                self._commit_job.cancel()
            self.release()
            if self.producer is not None:
                await self.producer.stop()

    async def open(self) -> None:
        """Fence the task's previous owner (exactly-once), lock and restore the stores,
        then start the agents and processors: ready for input."""
        await self._state_manager.lock_state_dir()
        if self.producer is not None:
            # Before the restore: fencing aborts the old owner's open transaction,
            # which would otherwise hold the changelog's last stable offset back.
            await self.producer.start()
            await self._read_from_committed()
        if self._stores:
            self.state = TaskState.RESTORING
            await self._state_manager.restore()
        for runner in self._runners:
            runner.start()
        self.state = TaskState.SUSPENDED if self._revoked_while_restoring else TaskState.RUNNING

    async def _read_from_committed(self) -> None:
        """Exactly-once: fetch the input from the offsets committed before the fence.

        The consumer took its positions from the committed offsets when the group
        assigned the partitions, before this task's producer fenced their previous
        owner. An owner whose session expired but that still runs (frozen, cut off:
        a zombie) commits its transactions until that fence, and what it committed
        in between would be processed a second time here. Fenced, it commits
        nothing more: the committed offsets read now are final. The partitions were
        paused since the task was created, so nothing was fetched from the old ones.
        """
        consumer = self._services.consumer
        for tp in sorted(self.partitions):
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
                # Anything fetched all the same (a transport that fetched before the
                # pause) came from the old position: it is fetched again from here.
                self._partition_group.forget(tp)
            consumer.resume(tp)

    async def process_records(self, tp: TopicPartition, records: Sequence[RawRecord]) -> None:
        """Process fetched records now, bypassing the queue (the test driver's way in)."""
        await self._process([(tp, records)])

    async def close(self) -> None:
        """End the agents' streams and close the processors, then commit what they did."""
        for runner in self._runners:
            await runner.close()
        await self.commit()

    def release(self) -> None:
        """Let go of everything the task holds, however it ended."""
        for runner in self._runners:
            runner.cancel()
        self.write_staged()  # committed, whatever ended the task
        self._state_manager.release()
        self.state = TaskState.CLOSED
        if self._suspend_done is not None and not self._suspend_done.done():
            self._suspend_done.set_result(None)

    def _idle_timeout(self, now: float) -> float | None:
        """Sleep until the next commit or wall-clock punctuation, whichever comes first."""
        deadlines = []
        if self._uncommitted:
            deadlines.append(self._next_commit - now)
        wall = [d for g in self._graphs if (d := g.next_wall_clock_ms()) is not None]
        if wall:
            deadlines.append((min(wall) - self._services.wall_clock()) / 1000)
        return min(deadlines) if deadlines else None

    def punctuate_wall_clock(self) -> None:
        """Fire due wall-clock punctuations: windows close even when no input comes."""
        for graph in self._graphs:
            due = graph.next_wall_clock_ms()
            if due is not None and due <= self._services.wall_clock():
                graph.punctuate_wall_clock()
                self._uncommitted = True

    def _commit_requested(self) -> bool:
        requested = any(g.commit_requested for g in self._graphs)
        for graph in self._graphs:
            graph.commit_requested = False
        return requested

    def _cache_full(self) -> bool:
        settings = self._services.settings
        return any(
            s.dirty_count() >= settings.store_cache_max_keys
            or s.dirty_bytes() >= settings.store_cache_max_bytes
            for s in self._stores.values()
        )

    async def _enter_suspension(self) -> None:
        assert self._suspend_done is not None
        await self.commit()
        self._partition_group.clear()
        self.state = TaskState.SUSPENDED
        self._suspend_done.set_result(None)
        self._suspend_done = None

    async def _wait(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _process(self, chunks: Chunks) -> None:
        began_s = time.perf_counter()
        self._in_hand = dict(chunks)
        if len(chunks) == 1:
            records: Sequence[RawRecord] = chunks[0][1]
            events, bad = self._decode(records, chunks[0][0].topic)
        else:
            # Several partitions: lowest timestamp first (DESIGN.md invariant 2).
            records = list(heapq.merge(*(c for _, c in chunks), key=_timestamp))
            events, bad = self._decode(records, None)
        clock = self._clock
        began, reached = clock.ms, clock.ms
        stores = self._stores.values()
        for store in stores:
            # Tables keyed by the records' keys read the batch's misses in a few queries.
            store.prefetch(event.key for event in events)
        try:
            for runner in self._runners:
                # Each runner takes the whole batch in turn; stream time must move record
                # by record for each, as if the task ran every record through all of them
                # (Kafka Streams), not start at the batch's last timestamp because an
                # agent went first: a windowed node would take the batch's older records
                # for late ones.
                clock.ms = began
                await runner.process(events)
                if clock.ms is not None and (reached is None or clock.ms > reached):
                    reached = clock.ms
            clock.ms = reached
        except RecordError as exc:
            self._advance_before(records, exc)
            raise
        finally:
            for store in stores:
                store.end_batch()
        if bad is not None:
            self._advance_before(records, bad)
            raise bad
        processed = self._processed
        for tp, chunk in chunks:
            self._positions[tp] = chunk[-1].offset + 1
            processed[tp].inc(len(chunk))
        self._uncommitted = True
        self._batch_seconds.observe(time.perf_counter() - began_s)

    def _decode(
        self, records: Sequence[RawRecord], topic_name: str | None
    ) -> tuple[list[Event], BadInputError | None]:
        """Deserialize a batch; bad records go to their topic's policy.

        A batch of one topic (`topic_name`) without bad records, the usual case, is
        one list comprehension; a bad record sends the batch through the record by
        record loop, which applies the policy."""
        if topic_name is not None:
            topic = self._topics[topic_name]
            key_of, value_of = bytes_reader(topic.key_serde), bytes_reader(topic.value_serde)
            try:
                return [
                    Event(
                        None if (k := r.key) is None else key_of(k),
                        None if (v := r.value) is None else value_of(v),
                        r.headers,
                        r.timestamp,
                        topic_name,
                        r.partition,
                        r.offset,
                    )
                    for r in records
                ], None
            except Exception:
                pass
        return self._decode_each(records)

    def _decode_each(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[Event], BadInputError | None]:
        events: list[Event] = []
        append = events.append
        topics = self._topics
        # Batches are mostly of one topic: look its serdes up when the topic changes.
        name = ""
        for record in records:
            if record.topic != name:
                name = record.topic
                topic = topics[name]
                key_of, value_of = topic.key_serde.deserialize, topic.value_serde.deserialize
            stage = "key deserialization"
            try:
                key = key_of(record.key)
                stage = "value deserialization"
                value = value_of(record.value)
            except Exception as exc:
                try:
                    self._failures.bad_input(record, exc, stage, topic.on_error)
                except BadInputError as bad:
                    return events, bad
                continue
            append(
                Event(
                    key,
                    value,
                    record.headers,
                    record.timestamp,
                    name,
                    record.partition,
                    record.offset,
                )
            )
        return events, None

    def _advance_before(self, records: Sequence[RawRecord], failed: RecordError) -> None:
        """Mark processed every record that came before the failed one."""
        for record in records:
            if (record.topic, record.partition, record.offset) == (
                failed.topic,
                failed.partition,
                failed.offset,
            ):
                break
            self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
            self._uncommitted = True

    def _raw_of(self, event: Event) -> RawRecord:
        # Every table write of a key new in the commit interval asks for this (the
        # partition check), most records' at a million keys: a chunk's offsets are
        # mostly consecutive, so the record is at the offset's distance from the first
        # (0.17 us, the bisection 0.7); compacted or transactional topics skip some.
        chunk = self._in_hand[(event.topic, event.partition)]
        at = event.offset - chunk[0].offset
        if 0 <= at < len(chunk) and chunk[at].offset == event.offset:
            return chunk[at]
        return chunk[bisect_left(chunk, event.offset, key=_offset)]

    async def commit(self, *, wait: bool = True) -> None:
        """Store changes to the changelog and outputs acknowledged, then input offsets.

        At-least-once:
        1. changed store keys go to their changelogs;
        2. the producer flushes: every output and changelog record is acknowledged;
        3. SQLite gets the changes together with the changelog offset they reach, so
           a restore resumes exactly there (DESIGN.md invariants 3 and 4);
        4. the input offsets are committed.

        Exactly-once: steps 2 and 4 are one transaction (the producer's `commit`
        sends the offsets into it), and step 3 comes after it, so the file only ever
        holds committed state; a crash between the two is mended by the restore.
        A failed transaction drops the uncommitted state and raises.

        `wait=False`, a task without stores under at-least-once: steps 2 and 4 run
        beside the processing (one commit at a time, the next waiting for the last),
        so that records arriving meanwhile are not held up by the broker's round
        trips. The offsets are those reached when it began, so every output they
        cover was sealed before the flush it waits for.
        """
        await self._commit_finished()
        for store in self._stores.values():
            store.expire()
        stores_dirty = any(s.dirty_count() for s in self._stores.values())
        if not self._uncommitted and not stores_dirty:
            return
        if not wait and not self._stores and self.producer is None:
            offsets = dict(self._positions)
            self._uncommitted = False
            self._commit_job = asyncio.create_task(
                self._acknowledge_and_commit(offsets, time.perf_counter()),
                name=f"commit of task {self.id}",
            )
            # The loop looks at it when it ends: a failure stops the task even if no
            # record comes.
            self._commit_job.add_done_callback(lambda _: self._wakeup.set())
            return
        began = time.perf_counter()
        await self._commit()
        self._commit_seconds.observe(time.perf_counter() - began)

    async def _commit_finished(self) -> None:
        """Wait for the commit running beside the processing, if any; raise its error."""
        job, self._commit_job = self._commit_job, None
        if job is not None:
            await job

    async def _acknowledge_and_commit(
        self, offsets: dict[TopicPartition, int], began: float
    ) -> None:
        """`commit(wait=False)`'s steps 2 and 4 (a stateless task has no 1 or 3)."""
        # 2. Acknowledged.
        await self._writer.flush()
        # 4. Input offsets.
        if await self._commit_offsets(offsets):
            log.debug("task %s committed %s", self.id, offsets)
        self._commit_seconds.observe(time.perf_counter() - began)

    async def _commit(self) -> None:
        """`commit`'s steps, once there is something to commit."""
        writer = self._writer
        # 1. Changelog records.
        pending = [(s, s.send_changes(writer)) for s in self._stores.values()]
        offsets = dict(self._positions) if self._uncommitted else {}
        if self.producer is not None:
            # 2 + 4. One transaction: outputs, changelogs, input offsets.
            try:
                acked = await self.producer.commit(offsets, self._services.app_id)
            except (ProducerFenced, TransactionAborted):
                self._drop_uncommitted()
                raise
            self._uncommitted = False
            # 3. Committed: staged for the file, written about once a second (per
            # 100 ms transaction it cost a fifth of the throughput); a crash before
            # that is mended by the restore from the file's checkpoint.
            for store, changes in pending:
                store.stage(changes, self._checkpoint_of(store, acked))
            if self._files_due():
                self.write_staged()
            log.debug("task %s committed %s", self.id, offsets)
            return
        # 2. Acknowledged.
        acked = await writer.flush()
        # 3. SQLite, with the changelog offsets reached.
        for store, changes in pending:
            store.persist(changes, self._checkpoint_of(store, acked))
        if offsets and self.producer is None:
            # 4. Input offsets.
            self._uncommitted = False
            if not await self._commit_offsets(offsets):
                return
        log.debug("task %s committed %s", self.id, offsets)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit input offsets to the group; False (and tried again at the next
        commit, if the partitions are still this worker's) if the group refused."""
        try:
            await self._services.consumer.commit(offsets)
        except CommitRejected as exc:
            self._uncommitted = True
            log.warning(
                "task %s: %s; if its partitions moved, their next owner processes the "
                "records since the last commit again",
                self.id,
                exc,
            )
            return False
        return True

    def _checkpoint_of(self, store: TaskStore, acked: Mapping[TopicPartition, int]) -> int | None:
        if store.table.changelog_is_source:
            # A KTable's store reflects its topic up to what the task processed.
            return self._positions.get(store.changelog_tp)
        return acked.get(store.changelog_tp)

    def _files_due(self) -> bool:
        settings = self._services.settings
        now = asyncio.get_running_loop().time()
        if now >= self._next_file_write or any(
            s.staged_count() >= settings.store_cache_max_keys for s in self._stores.values()
        ):
            self._next_file_write = now + STATE_FILE_INTERVAL_S
            return True
        return False

    def write_staged(self) -> None:
        """Exactly-once: write what committed to the state files now."""
        for store in self._stores.values():
            store.write_staged()

    def _drop_uncommitted(self) -> None:
        """Forget every change since the last commit: the broker has none of them.
        What did commit goes to the files first."""
        self.write_staged()
        for store in self._stores.values():
            store.discard_uncommitted()
        self._uncommitted = False
