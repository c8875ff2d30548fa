"""The transport seam: what the runtime needs from a broker, and nothing more.

`memory://` and `kafka://` implement these; the runtime never imports a client
library. Record and partition types match aiokafka's field names so the Kafka
transport can hand its records through without copying them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

Headers = Sequence[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RawRecord(Protocol):
    """A consumed record before deserialization (aiokafka's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the app declares it; the admin creates it or checks it matches."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


class RebalanceListener(Protocol):
    """Told of partition moves; revoke runs before assign, as in Kafka."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


class AssignmentPlanner(Protocol):
    """Decides a consumer group's partition assignment when this member leads it."""

    name: str

    def member_metadata(self) -> bytes:
        """What this member tells the leader when it joins (e.g. the tasks it holds)."""

    def assign(self, members: Mapping[str, bytes]) -> dict[str, tuple[set[TopicPartition], bytes]]:
        """Member id -> (partitions, data for the member), from each member's metadata."""

    def on_assignment(self, data: bytes) -> None:
        """This member's data from the leader's plan, before its partitions are assigned."""


class Consumer(abc.ABC):
    """One group member. Offsets are committed by the framework, never automatically."""

    @abc.abstractmethod
    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        """Records fetched since the last call, per partition, in offset order."""

    @abc.abstractmethod
    def pause(self, tp: TopicPartition) -> None: ...

    @abc.abstractmethod
    def resume(self, tp: TopicPartition) -> None: ...

    @abc.abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch this partition from `offset` next (ignored if it is not assigned)."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offset to read for each partition."""

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    def request_rejoin(self) -> None:
        """Rejoin the group soon, so that the leader plans again (a probing rebalance)."""

    @abc.abstractmethod
    def quiet_for(self, tp: TopicPartition) -> float:
        """Seconds for which the broker's answers have shown, without a break, no record
        of the partition past this member's position: how long its input has really
        been quiet (0 while records wait to be fetched).

        Only what was watched counts: a broker that stood still, a process that was
        frozen, a rebalance that reset the position all start the count again, so
        wall-clock decisions such as closing idle windows never take input that is
        late in coming for no input.
        """

    def end_offset(self, tp: TopicPartition) -> int | None:
        """The partition's end as the broker's last answer showed it (the high watermark,
        or the last stable offset when reading committed); None when not known. Read
        for the consumer-lag metric, possibly from another thread: no I/O."""
        return None

    def position(self, tp: TopicPartition) -> int | None:
        """The next offset this member fetches of an assigned partition; None when not
        known. Like `end_offset`, no I/O."""
        return None


class Producer(abc.ABC):
    """Buffers records and sends them in batches; `flush` is the acknowledgement point."""

    # Told the topic of each delivery (a record batch) that failed, as it fails: the
    # worker counts them. `flush` reports the failure all the same.
    on_delivery_failure: Callable[[str], None] | None = None

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        """Queue one record; never blocks. Errors surface from `flush`."""

    @abc.abstractmethod
    async def flush(self) -> Mapping[TopicPartition, int]:
        """Return once every record queued so far is acknowledged; raise if any failed.

        The result maps each partition this producer has written to the offset after
        its last acknowledged record (cumulative, not just since the last flush):
        what a store checkpoints as the changelog position it reflects.
        """


class TransactionalProducer(Producer):
    """A producer bound to one transactional id (one per task under exactly-once).

    `start` registers the id with the broker (InitProducerId), which bumps its epoch
    and so fences any older producer holding the same id: the task's previous owner
    (Kafka Streams' "EOS alpha" design; aiokafka's TxnOffsetCommit carries no group
    generation, so fencing cannot come from the group, KIP-447).

    A transaction begins implicitly with the first `send` after a commit or abort.
    Records sent inside it are invisible to `read_committed` readers until
    `commit` and hidden for good by `abort`. Fatal errors (`ProducerFenced`) are
    raised from `send`'s later flush, `commit` or `abort` and leave the producer
    unusable; any other failure of `commit` aborts the transaction and raises
    `TransactionAborted`.
    """

    transactional_id: str

    @abc.abstractmethod
    async def commit(
        self, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> Mapping[TopicPartition, int]:
        """Commit everything sent since the last commit together with the group's
        input `offsets` (the next offset to read per partition), atomically.

        Returns what `flush` returns: per written partition, the offset after its
        last acknowledged record (cumulative). With nothing sent and no offsets it
        does nothing.
        """

    @abc.abstractmethod
    async def abort(self) -> None:
        """Abort the open transaction, if any: its records and offsets never count."""


class PartitionReader(abc.ABC):
    """Reads chosen partitions from chosen offsets outside any group.

    Restores, standby replicas and global tables read changelogs with it.
    """

    # Whether the broker's topics outlive this process (memory://'s do not, so a
    # state file of an earlier run is always ahead of its changelog there).
    topics_outlive_process = True

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        """Read exactly these partitions, each from the given offset."""

    @abc.abstractmethod
    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]: ...

    @abc.abstractmethod
    def position(self, tp: TopicPartition) -> int:
        """The next offset to read; moves past gaps (compaction, transaction markers)."""

    @abc.abstractmethod
    async def offsets(self, tp: TopicPartition) -> tuple[int, int]:
        """(first offset, end offset). Some brokers under-report the end: treat
        `position >= end` as caught up and apply whole fetched batches."""


class Admin(abc.ABC):
    @abc.abstractmethod
    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition counts of the topics that exist; missing topics are left out."""

    @abc.abstractmethod
    async def create_topics(self, specs: Sequence[TopicSpec]) -> None: ...

    async def close(self) -> None:
        return None


class Transport(abc.ABC):
    """Makes the clients of one broker; one per worker.

    `read_committed` (exactly-once) makes its consumers and readers skip aborted
    transactions and stop at the last stable offset (Kafka's isolation.level).
    """

    url: str
    read_committed: bool = False

    @abc.abstractmethod
    def consumer(self, group_id: str, planner: AssignmentPlanner | None = None) -> Consumer:
        """A group member; `planner` replaces the client's default assignment strategy."""

    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def transactional_producer(
        self, transactional_id: str, timeout_ms: int = 60_000
    ) -> TransactionalProducer:
        """A producer for exactly-once; `timeout_ms` is the transaction timeout after
        which the broker aborts a transaction its producer left open."""

    @abc.abstractmethod
    def admin(self) -> Admin: ...

    @abc.abstractmethod
    def reader(self) -> PartitionReader: ...
