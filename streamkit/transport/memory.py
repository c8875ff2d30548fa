"""`memory://`: an in-process broker for single-process use, examples and unit tests.

It keeps Kafka's contract where streamkit relies on it: partitioned append-only
logs with offsets from 0, timestamps and headers, committed offsets per group,
a new group starting from the earliest offset, pause/resume, and produce errors
for unknown topics or partitions. It allows one member per group, so it cannot
scale out: that is what `kafka://` is for.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..errors import CommitRejected, ProducerFenced, TransactionAborted, TransportError
from .base import (
    Admin,
    AssignmentPlanner,
    Consumer,
    Headers,
    PartitionReader,
    Producer,
    RawRecord,
    RebalanceListener,
    TopicPartition,
    TopicSpec,
    TransactionalProducer,
    Transport,
)
from .memory_transactions import Transaction, TransactionLog, TxnState
from .offset_reset import resume_position


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    # The transaction that wrote it; None for a plain producer's record.
    txn: Transaction | None = None
    # A commit or abort marker: takes an offset, never returned to a reader.
    control: bool = False

    def visible(self, read_committed: bool) -> bool:
        if self.control:
            return False
        return not (read_committed and self.txn is not None and self.txn.state is TxnState.ABORTED)


class MemoryBroker:
    """A named in-process broker; `memory://name` picks one, `memory://` the default."""

    _brokers: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str) -> None:
        self.name = name
        self._logs: dict[str, list[list[MemoryRecord]]] = {}
        self._configs: dict[str, dict[str, str]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._members: dict[str, MemoryConsumer] = {}
        # Offsets below these are deleted (retention, or Kafka's DeleteRecords).
        self._log_start: dict[TopicPartition, int] = {}
        self._wakeups: set[asyncio.Event] = set()
        self.transactions = TransactionLog(self._write_marker, self._commit_unchecked)
        # Something of this process read from it (a consumer, a test): what was sent
        # here had a reader.
        self.was_read = False

    @classmethod
    def named(cls, name: str = "") -> MemoryBroker:
        if name not in cls._brokers:
            cls._brokers[name] = cls(name)
        return cls._brokers[name]

    @classmethod
    def for_url(cls, url: str) -> MemoryBroker:
        return cls.named(url.partition("://")[2].strip("/"))

    @classmethod
    def existing(cls, url: str) -> MemoryBroker | None:
        """The broker of `url` if this process made it, without making it."""
        return cls._brokers.get(url.partition("://")[2].strip("/"))

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget one broker's (or every broker's) topics and offsets."""
        if name is None:
            cls._brokers.clear()
        else:
            cls._brokers.pop(name, None)

    # topics -------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        if name in self._logs:
            raise TransportError(f"topic {name!r} already exists")
        if partitions < 1:
            raise TransportError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        self._logs[name] = [[] for _ in range(partitions)]
        self._configs[name] = dict(config or {})

    def delete_topic(self, name: str) -> None:
        """Delete a topic with its records and every group's offsets on it (Kafka's
        DeleteTopics); producing to it fails from now on, until it is created again."""
        if self._logs.pop(name, None) is None:
            raise TransportError(f"unknown topic {name!r}")
        self._configs.pop(name, None)
        for tp in [tp for tp in self._log_start if tp.topic == name]:
            del self._log_start[tp]
        for offsets in self._committed.values():
            for tp in [tp for tp in offsets if tp.topic == name]:
                del offsets[tp]

    def partition_count(self, topic: str) -> int | None:
        log = self._logs.get(topic)
        return None if log is None else len(log)

    def topics(self) -> list[str]:
        return sorted(self._logs)

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int = 0,
        *,
        transaction: tuple[str, int] | None = None,
    ) -> int:
        """Append one record and return its offset; with `transaction` (transactional
        id, epoch), inside that producer's open transaction (begun if none)."""
        log = self._log(topic, partition)
        offset = len(log)
        txn = None
        if transaction is not None:
            txn = self.transactions.transaction_for_write(
                *transaction, TopicPartition(topic, partition), offset
            )
        log.append(
            MemoryRecord(topic, partition, offset, timestamp_ms, key, value, tuple(headers), txn)
        )
        self._wake()
        return offset

    def _log(self, topic: str, partition: int) -> list[MemoryRecord]:
        partitions = self._logs.get(topic)
        if partitions is None:
            raise TransportError(f"unknown topic {topic!r}")
        if not 0 <= partition < len(partitions):
            raise TransportError(
                f"topic {topic!r} has {len(partitions)} partitions, no partition {partition}"
            )
        return partitions[partition]

    def _write_marker(self, tp: TopicPartition, txn: Transaction) -> None:
        log = self._logs[tp.topic][tp.partition]
        log.append(MemoryRecord(tp.topic, tp.partition, len(log), 0, None, None, (), txn, True))
        self._wake()

    def _wake(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    def records(
        self, topic: str, partition: int | None = None, *, read_committed: bool = False
    ) -> list[MemoryRecord]:
        """Every record of a topic (all partitions, partition by partition) or one
        partition, as a consumer of that isolation level would see them."""
        partitions = self._logs.get(topic)
        if partitions is None:
            raise TransportError(f"unknown topic {topic!r}")
        chosen = range(len(partitions)) if partition is None else [partition]
        out: list[MemoryRecord] = []
        for p in chosen:
            tp = TopicPartition(topic, p)
            out.extend(self.read(tp, 0, len(partitions[p]), read_committed)[0])
        return out

    def read(
        self, tp: TopicPartition, position: int, limit: int, read_committed: bool = False
    ) -> tuple[list[MemoryRecord], int]:
        """Up to `limit` records from `position` a reader of that isolation level sees,
        and the position after them: past markers and aborted records it skipped, and
        never past the last stable offset under read_committed."""
        self.was_read = True
        position = max(position, self.start_offset(tp))
        log = self._logs[tp.topic][tp.partition]
        if tp not in self.transactions.transactional:
            chunk = log[position : position + limit]
            return chunk, position + len(chunk)
        end = self.end_offset(tp, read_committed)
        out: list[MemoryRecord] = []
        while position < end and len(out) < limit:
            record = log[position]
            if record.visible(read_committed):
                out.append(record)
            position += 1
        return out, position

    def start_offset(self, tp: TopicPartition) -> int:
        return self._log_start.get(tp, 0)

    def delete_records(self, tp: TopicPartition, before_offset: int) -> None:
        """Delete a partition's records below an offset, as retention or DeleteRecords do."""
        end = self.end_offset(tp)
        self._log_start[tp] = max(self.start_offset(tp), min(before_offset, end))

    def end_offset(self, tp: TopicPartition, read_committed: bool = False) -> int:
        """The high watermark, or under read_committed the last stable offset."""
        if tp.topic not in self._logs:
            raise TransportError(f"unknown topic {tp.topic!r}")
        if read_committed and tp in self.transactions.transactional:
            self.transactions.expire()  # may write abort markers
            end = len(self._logs[tp.topic][tp.partition])
            return self.transactions.last_stable_offset(tp, end)
        return len(self._logs[tp.topic][tp.partition])

    # groups -------------------------------------------------------------------

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        return self._committed.get(group_id, {}).get(tp)

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self.check_offsets(offsets)
        self._commit_unchecked(group_id, offsets)

    def check_offsets(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Refuse offsets to commit that lie outside their logs, as Kafka does."""
        for tp, offset in offsets.items():
            end = self.end_offset(tp)
            if not 0 <= offset <= end:
                raise TransportError(
                    f"commit of offset {offset} for {tp.topic}[{tp.partition}] "
                    f"outside the log (end offset {end})"
                )

    def _commit_unchecked(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._committed.setdefault(group_id, {}).update(offsets)

    def member_count(self, group_id: str) -> int:
        """Running members of a group: 0 or 1 on the memory broker."""
        return 1 if group_id in self._members else 0

    def join(self, group_id: str, member: MemoryConsumer) -> None:
        if group_id in self._members:
            raise TransportError(
                f"group {group_id!r} already has a member on memory://{self.name}: the "
                "memory broker runs one worker per app; use kafka:// to run several"
            )
        self._members[group_id] = member
        self._wakeups.add(member.wakeup)

    def leave(self, group_id: str, member: MemoryConsumer) -> None:
        if self._members.get(group_id) is member:
            del self._members[group_id]
        self._wakeups.discard(member.wakeup)

    def expire_member(self, group_id: str, *, rejoins: bool = False) -> None:
        """Drop a group's member as a session timeout would (it froze, or its process
        died): another can join, and the old one's partitions and commits are gone.

        With `rejoins`, the member joins again at its next poll if the group is free,
        as a Kafka member that wakes up does: its partitions are revoked first (a
        commit then is refused), then assigned anew.
        """
        member = self._members.get(group_id)
        if member is not None:
            self.leave(group_id, member)
            member.expired = True
            member.rejoins = rejoins

    def is_member(self, group_id: str, member: MemoryConsumer) -> bool:
        return self._members.get(group_id) is member


class MemoryConsumer(Consumer):
    def __init__(
        self,
        broker: MemoryBroker,
        group_id: str,
        planner: AssignmentPlanner | None = None,
        auto_offset_reset: str = "earliest",
        read_committed: bool = False,
    ) -> None:
        self._auto_offset_reset = auto_offset_reset
        self._read_committed = read_committed
        # Set when the broker dropped it from its group (a session timeout), and
        # whether it joins again at its next poll.
        self.expired = False
        self.rejoins = False
        self._broker = broker
        self._group_id = group_id
        self._planner = planner
        self.wakeup = asyncio.Event()
        self._topics: list[str] = []
        self._listener: RebalanceListener | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._assigned = False
        self._rejoin_requested = False

    async def _revoke_all(self) -> None:
        assert self._listener is not None
        await self._listener.on_partitions_revoked(set(self._positions))
        self._positions.clear()
        self._assigned = False

    async def _rejoin(self) -> None:
        await self._revoke_all()
        self.expired = False
        self._broker.join(self._group_id, self)

    def request_rejoin(self) -> None:
        # As a Kafka member does: revoke everything, then take the new plan.
        self._rejoin_requested = True
        self.wakeup.set()

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._broker.join(self._group_id, self)
        self._topics = list(topics)
        self._listener = listener

    async def stop(self) -> None:
        self._broker.leave(self._group_id, self)

    async def _assign(self) -> None:
        # The only member gets every partition (through the planner, if there is one,
        # as the leader of a Kafka group would); a new group starts at the earliest offset.
        assigned: set[TopicPartition] = set()
        for topic in self._topics:
            count = self._broker.partition_count(topic)
            if count is None:
                raise TransportError(f"subscribed topic {topic!r} does not exist")
            assigned.update(TopicPartition(topic, p) for p in range(count))
        if self._planner is not None:
            ((assigned, data),) = self._planner.assign(
                {"member": self._planner.member_metadata()}
            ).values()
            self._planner.on_assignment(data)
        for tp in assigned:
            committed = self._broker.committed(self._group_id, tp)
            first = self._broker.start_offset(tp)
            if committed is None:
                self._positions[tp] = first
            elif committed < first:
                self._positions[tp] = resume_position(
                    self._auto_offset_reset, tp, committed, first, self._broker.end_offset(tp)
                )
            else:
                self._positions[tp] = committed
        self._assigned = True
        assert self._listener is not None
        await self._listener.on_partitions_assigned(assigned)

    def _collect(self, max_records: int) -> dict[TopicPartition, Sequence[RawRecord]]:
        out: dict[TopicPartition, Sequence[RawRecord]] = {}
        budget = max_records
        for tp, position in self._positions.items():
            if budget <= 0:
                break
            if tp in self._paused:
                continue
            chunk, self._positions[tp] = self._broker.read(
                tp, position, budget, self._read_committed
            )
            if chunk:
                out[tp] = chunk
                budget -= len(chunk)
        if budget <= 0 and out:
            # Rotate so a busy first partition cannot starve the others.
            first = next(iter(self._positions))
            self._positions[first] = self._positions.pop(first)
        return out

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        if self.expired:
            if not (self.rejoins and self._broker.member_count(self._group_id) == 0):
                # Out of the group: nothing is assigned to it any more.
                await asyncio.sleep(timeout_s)
                return {}
            await self._rejoin()
        if self._rejoin_requested:
            self._rejoin_requested = False
            await self._revoke_all()
        if not self._assigned:
            await self._assign()
        self.wakeup.clear()
        out = self._collect(max_records)
        if out:
            return out
        try:
            async with asyncio.timeout(timeout_s):
                await self.wakeup.wait()
        except TimeoutError:
            return {}
        return self._collect(max_records)

    def pause(self, tp: TopicPartition) -> None:
        self._paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self._paused.discard(tp)
        self.wakeup.set()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp in self._positions:
            self._positions[tp] = offset

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not self._broker.is_member(self._group_id, self):
            raise CommitRejected(
                f"group {self._group_id!r} no longer has this member (session timed out)"
            )
        self._broker.commit(self._group_id, offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._broker.committed(self._group_id, tp)

    def end_offset(self, tp: TopicPartition) -> int | None:
        return self._broker.end_offset(tp, self._read_committed) if tp in self._positions else None

    def position(self, tp: TopicPartition) -> int | None:
        return self._positions.get(tp)

    def quiet_for(self, tp: TopicPartition) -> float:
        # In-process: no record is ever on its way, so caught up is quiet for good.
        position = self._positions.get(tp)
        caught_up = (
            not self.expired
            and position is not None
            and position >= self._broker.end_offset(tp, self._read_committed)
        )
        return math.inf if caught_up else 0.0


class MemoryProducer(Producer):
    """Appends at once, so every record is acknowledged by the time `flush` runs."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._error: TransportError | None = None
        self._acked: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        try:
            offset = self._broker.append(topic, partition, key, value, headers, timestamp_ms)
        except TransportError as exc:
            self._error = self._error or exc
            if self.on_delivery_failure is not None:
                self.on_delivery_failure(topic)
        else:
            self._acked[TopicPartition(topic, partition)] = offset + 1

    async def flush(self) -> Mapping[TopicPartition, int]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._acked


class MemoryTransactionalProducer(TransactionalProducer):
    """Appends at once inside its transaction; the broker's TransactionLog rules."""

    def __init__(self, broker: MemoryBroker, transactional_id: str, timeout_ms: int) -> None:
        self._broker = broker
        self.transactional_id = transactional_id
        self._timeout_ms = timeout_ms
        self._epoch = -1
        self._error: TransportError | None = None
        self._acked: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        # InitProducerId: bumps the epoch, fencing (and aborting for) any older holder.
        _, self._epoch = self._broker.transactions.init_producer(
            self.transactional_id, self._timeout_ms
        )

    async def stop(self) -> None:
        return None  # like Kafka's close(): an open transaction waits for its timeout

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        if self._error is not None:
            return  # the transaction is doomed: it will abort, and these with it
        try:
            offset = self._broker.append(
                topic,
                partition,
                key,
                value,
                headers,
                timestamp_ms,
                transaction=(self.transactional_id, self._epoch),
            )
        except TransportError as exc:
            self._error = exc
            if self.on_delivery_failure is not None:
                self.on_delivery_failure(topic)
        else:
            self._acked[TopicPartition(topic, partition)] = offset + 1

    async def flush(self) -> Mapping[TopicPartition, int]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._acked

    async def commit(
        self, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> Mapping[TopicPartition, int]:
        """1. flush: a send that failed fails the transaction; 2. add the input offsets;
        3. commit: markers written, offsets become the group's."""
        txns = self._broker.transactions
        try:
            # 1. Every record sent so far is in the log (or its error is raised here).
            acked = await self.flush()
            # 2. The offsets join the transaction; refused if outside their logs.
            if offsets:
                self._broker.check_offsets(offsets)
                txns.add_offsets(self.transactional_id, self._epoch, group_id, offsets)
            # 3. Commit markers; the offsets are committed with them.
            txns.commit(self.transactional_id, self._epoch)
        except ProducerFenced:
            raise
        except TransportError as exc:
            await self.abort()
            raise TransactionAborted(
                f"transaction of {self.transactional_id!r} aborted: {exc}"
            ) from exc
        return acked

    async def abort(self) -> None:
        self._error = None
        self._broker.transactions.abort(self.transactional_id, self._epoch)


class MemoryReader(PartitionReader):
    topics_outlive_process = False

    def __init__(self, broker: MemoryBroker, read_committed: bool = False) -> None:
        self._broker = broker
        self._read_committed = read_committed
        self._positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        self._positions = dict(positions)

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        out: dict[TopicPartition, Sequence[RawRecord]] = {}
        for tp, position in self._positions.items():
            chunk, self._positions[tp] = self._broker.read(
                tp, position, max_records, self._read_committed
            )
            if chunk:
                out[tp] = chunk
        if not out:
            await asyncio.sleep(min(timeout_s, 0.01))
        return out

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    async def offsets(self, tp: TopicPartition) -> tuple[int, int]:
        return self._broker.start_offset(tp), self._broker.end_offset(tp, self._read_committed)


class MemoryAdmin(Admin):
    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        counts = {t: self._broker.partition_count(t) for t in topics}
        return {t: n for t, n in counts.items() if n is not None}

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            self._broker.create_topic(spec.name, spec.partitions, spec.config)


class MemoryTransport(Transport):
    def __init__(
        self, url: str, auto_offset_reset: str = "earliest", *, read_committed: bool = False
    ) -> None:
        self.url = url
        self.read_committed = read_committed
        self.broker = MemoryBroker.for_url(url)
        self._auto_offset_reset = auto_offset_reset

    def consumer(self, group_id: str, planner: AssignmentPlanner | None = None) -> Consumer:
        return MemoryConsumer(
            self.broker, group_id, planner, self._auto_offset_reset, self.read_committed
        )

    def producer(self) -> Producer:
        return MemoryProducer(self.broker)

    def transactional_producer(
        self, transactional_id: str, timeout_ms: int = 60_000
    ) -> TransactionalProducer:
        return MemoryTransactionalProducer(self.broker, transactional_id, timeout_ms)

    def admin(self) -> Admin:
        return MemoryAdmin(self.broker)

    def reader(self) -> PartitionReader:
        return MemoryReader(self.broker, self.read_committed)
