"""`memory://`: an in-process broker for single-process use, examples and unit tests.

It keeps Kafka's contract where streamkit relies on it: partitioned append-only
logs with offsets from 0, timestamps and headers, committed offsets per group,
a new group starting from the earliest offset, pause/resume, and produce errors
for unknown topics or partitions. It allows one member per group, so it cannot
scale out: that is what `kafka://` is for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..errors import TransportError
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

    @classmethod
    def named(cls, name: str = "") -> MemoryBroker:
        if name not in cls._brokers:
            cls._brokers[name] = cls(name)
        return cls._brokers[name]

    @classmethod
    def for_url(cls, url: str) -> MemoryBroker:
        return cls.named(url.partition("://")[2].strip("/"))

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
    ) -> int:
        """Append one record and return its offset."""
        partitions = self._logs.get(topic)
        if partitions is None:
            raise TransportError(f"unknown topic {topic!r}")
        if not 0 <= partition < len(partitions):
            raise TransportError(
                f"topic {topic!r} has {len(partitions)} partitions, no partition {partition}"
            )
        log = partitions[partition]
        offset = len(log)
        log.append(MemoryRecord(topic, partition, offset, timestamp_ms, key, value, tuple(headers)))
        for wakeup in self._wakeups:
            wakeup.set()
        return offset

    def records(self, topic: str, partition: int | None = None) -> list[MemoryRecord]:
        """Every record of a topic (all partitions, partition by partition) or one partition."""
        partitions = self._logs.get(topic)
        if partitions is None:
            raise TransportError(f"unknown topic {topic!r}")
        chosen = range(len(partitions)) if partition is None else [partition]
        return [
            r for p in chosen for r in partitions[p][self.start_offset(TopicPartition(topic, p)) :]
        ]

    def read(self, tp: TopicPartition, position: int, limit: int) -> list[MemoryRecord]:
        position = max(position, self.start_offset(tp))
        return self._logs[tp.topic][tp.partition][position : position + limit]

    def start_offset(self, tp: TopicPartition) -> int:
        return self._log_start.get(tp, 0)

    def delete_records(self, tp: TopicPartition, before_offset: int) -> None:
        """Delete a partition's records below an offset, as retention or DeleteRecords do."""
        end = self.end_offset(tp)
        self._log_start[tp] = max(self.start_offset(tp), min(before_offset, end))

    def end_offset(self, tp: TopicPartition) -> int:
        if tp.topic not in self._logs:
            raise TransportError(f"unknown topic {tp.topic!r}")
        return len(self._logs[tp.topic][tp.partition])

    # groups -------------------------------------------------------------------

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        return self._committed.get(group_id, {}).get(tp)

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            end = self.end_offset(tp)
            if not 0 <= offset <= end:
                raise TransportError(
                    f"commit of offset {offset} for {tp.topic}[{tp.partition}] "
                    f"outside the log (end offset {end})"
                )
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


class MemoryConsumer(Consumer):
    def __init__(
        self,
        broker: MemoryBroker,
        group_id: str,
        planner: AssignmentPlanner | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self._auto_offset_reset = auto_offset_reset
        self._broker = broker
        self._group_id = group_id
        self._planner = planner
        self.wakeup = asyncio.Event()
        self._topics: list[str] = []
        self._listener: RebalanceListener | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._assigned = False

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
            chunk = self._broker.read(tp, position, budget)
            if chunk:
                out[tp] = chunk
                self._positions[tp] = position + len(chunk)
                budget -= len(chunk)
        if budget <= 0 and out:
            # Rotate so a busy first partition cannot starve the others.
            first = next(iter(self._positions))
            self._positions[first] = self._positions.pop(first)
        return out

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
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
        self._broker.commit(self._group_id, offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._broker.committed(self._group_id, tp)


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
        else:
            self._acked[TopicPartition(topic, partition)] = offset + 1

    async def flush(self) -> Mapping[TopicPartition, int]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._acked


class MemoryReader(PartitionReader):
    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
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
            chunk = self._broker.read(tp, position, max_records)
            if chunk:
                out[tp] = chunk
                self._positions[tp] = position + len(chunk)
        if not out:
            await asyncio.sleep(min(timeout_s, 0.01))
        return out

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    async def offsets(self, tp: TopicPartition) -> tuple[int, int]:
        return self._broker.start_offset(tp), self._broker.end_offset(tp)


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
        return MemoryConsumer(self.broker, group_id, planner, self._auto_offset_reset)

    def producer(self) -> Producer:
        return MemoryProducer(self.broker)

    def transactional_producer(
        self, transactional_id: str, timeout_ms: int = 60_000
    ) -> TransactionalProducer:
        raise NotImplementedError("being built (issue 10)")

    def admin(self) -> Admin:
        return MemoryAdmin(self.broker)

    def reader(self) -> PartitionReader:
        return MemoryReader(self.broker)
