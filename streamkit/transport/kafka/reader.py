"""The partition reader: restores, standby replicas and global tables read with it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import KafkaError, LeaderNotAvailableError, for_code
from aiokafka.protocol.fetch import FetchRequest

from ...errors import TransportError
from ..base import PartitionReader, RawRecord, TopicPartition
from .consumer import _start_consumer
from .options import _CLIENT_ERRORS, KafkaOptions, _describe, _guard

_READ_UNCOMMITTED, _READ_COMMITTED = 0, 1  # FetchRequest's isolation levels


class KafkaReader(PartitionReader):
    """Reads chosen partitions from chosen offsets, outside any consumer group.

    State restores, standby replicas and global tables read changelogs with it.
    It never commits, and never resets a position on its own: an offset outside
    the log fails `getmany` rather than silently jumping to one end of it.

    `offsets()` does not trust ListOffsets alone. Tansu answers it with the first
    offset of the partition's last batch + 1, short of the rest of that batch,
    while the high watermark in a fetch response is exact; so the end is the
    larger of the two, from a fetch made for the purpose (a reader that has not
    fetched yet knows no high watermark). `position()` is aiokafka's fetch
    position, which moves past what a fetch skipped (transaction markers,
    compacted records), so `position >= end` means caught up on any broker.

    Those lookups go through a second, idle aiokafka consumer: a broker answers
    the requests of one connection in order, so on the reading consumer's
    connection each would wait behind a fetch that long-polls at the end of the
    log (`fetch_max_wait_ms`: 1.5 s for the three requests of `offsets()`).
    """

    def __init__(self, url: str, servers: list[str], options: KafkaOptions) -> None:
        self._url = url
        self._servers = servers
        self._options = options
        self._isolation = (
            _READ_COMMITTED if options.isolation_level == "read_committed" else _READ_UNCOMMITTED
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._lookups: AIOKafkaConsumer | None = None
        self._lookups_lock = asyncio.Lock()
        self._positions: dict[TopicPartition, int] = {}
        self._assigned: dict[TopicPartition, KafkaTopicPartition] = {}

    @property
    def raw(self) -> AIOKafkaConsumer:
        """The aiokafka consumer, for what the transport seam does not cover yet."""
        return self._started()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise TransportError(f"broker {self._url}: partition reader is not started")
        return self._consumer

    async def start(self) -> None:
        self._consumer = await _start_consumer(
            self._url,
            self._servers,
            "connecting partition reader",
            group_id=None,
            **self._options.reader(),
        )
        self._seek_all()

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        lookups, self._lookups = self._lookups, None
        try:
            if lookups is not None:
                await _guard(self._url, "stopping partition reader", lookups.stop())
        finally:
            if consumer is not None:
                await _guard(self._url, "stopping partition reader", consumer.stop())

    async def _lookup_client(self) -> AIOKafkaConsumer:
        self._started()
        async with self._lookups_lock:
            if self._lookups is None:
                self._lookups = await _start_consumer(
                    self._url,
                    self._servers,
                    "connecting partition reader for offset lookups",
                    group_id=None,
                    **self._options.reader(),
                )
            return self._lookups

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        for tp, offset in positions.items():
            if offset < 0:
                raise ValueError(f"cannot read {tp.topic}[{tp.partition}] from offset {offset}")
        self._positions = {TopicPartition(*tp): offset for tp, offset in positions.items()}
        self._assigned = {tp: KafkaTopicPartition(*tp) for tp in self._positions}
        if self._consumer is not None:
            self._seek_all()

    def _seek_all(self) -> None:
        # aiokafka replaces the whole assignment and drops what it prefetched for it.
        consumer = self._started()
        consumer.assign(list(self._assigned.values()))
        for tp, ktp in self._assigned.items():
            consumer.seek(ktp, self._positions[tp])

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        consumer = self._started()
        try:
            fetched = await consumer.getmany(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
            out: dict[TopicPartition, Sequence[RawRecord]] = {}
            positions = self._positions
            for ktp, records in fetched.items():
                tp = TopicPartition(ktp.topic, ktp.partition)
                if tp in positions:  # aiokafka returns only assigned partitions; checked anyway
                    out[tp] = records
                    positions[tp] = max(positions[tp], records[-1].offset + 1)
            # The fetch position also moves past records aiokafka skipped without
            # returning any (markers, aborted or compacted batches); for an
            # assigned partition with a position it answers without waiting.
            for tp, ktp in self._assigned.items():
                fetch_position = await consumer.position(ktp)
                if fetch_position > positions[tp]:
                    positions[tp] = fetch_position
        except _CLIENT_ERRORS as exc:
            where = ", ".join(
                f"{tp.topic}[{tp.partition}]@{o}" for tp, o in self._positions.items()
            )
            raise TransportError(
                f"broker {self._url}: reading {where} failed: {_describe(exc)}"
            ) from exc
        return out

    def position(self, tp: TopicPartition) -> int:
        try:
            return self._positions[tp]
        except KeyError:
            raise TransportError(
                f"broker {self._url}: {tp.topic}[{tp.partition}] is not assigned to this "
                "partition reader"
            ) from None

    async def offsets(self, tp: TopicPartition) -> tuple[int, int]:
        consumer = self._started()
        ktp = KafkaTopicPartition(tp.topic, tp.partition)
        lookups = await self._lookup_client()

        async def lookup() -> tuple[int, int]:
            first, listed = await asyncio.gather(
                lookups.beginning_offsets([ktp]), lookups.end_offsets([ktp])
            )
            end = listed[ktp]
            return first[ktp], max(end, await self._fetched_end(lookups, ktp, end))

        first, end = await _guard(
            self._url, f"reading the first and end offsets of {tp.topic}[{tp.partition}]", lookup()
        )
        if tp in self._assigned:
            # What this reader's own fetches saw; never more than the truth.
            known = consumer.last_stable_offset(ktp) if self._isolation else consumer.highwater(ktp)
            if known is not None and known > end:
                end = known
        return first, end

    async def _fetched_end(
        self, consumer: AIOKafkaConsumer, ktp: KafkaTopicPartition, offset: int
    ) -> int:
        """The high watermark (or, reading committed, the last stable offset) of a fetch
        from `offset`, which ListOffsets gave as the end: an empty answer on Kafka,
        the last batch on Tansu. aiokafka has no API for this, so it asks itself."""
        client = consumer._client
        node_id = client.cluster.leader_for_partition(ktp)
        if node_id is None or node_id < 0:
            raise LeaderNotAvailableError(f"no leader known for {ktp.topic}[{ktp.partition}]")
        request = FetchRequest(
            # Max wait: at the end of the log, this long. Not 0: Tansu answers a
            # fetch with no wait with no partitions at all.
            1,
            1,  # min bytes
            1,  # max bytes: the broker still returns a first batch of any size
            self._isolation,
            [(ktp.topic, [(ktp.partition, offset, 1)])],
        )
        response = await client.send(node_id, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *rest in partitions:
                if (topic, partition) != (ktp.topic, ktp.partition):
                    continue
                if error_code:
                    raise for_code(error_code)(f"fetch from offset {offset}")
                if (
                    self._isolation == _READ_COMMITTED
                    and response.API_VERSION >= 4
                    and rest[0] >= 0
                ):
                    return int(rest[0])
                return int(highwater)
        raise KafkaError(f"the fetch response did not include {ktp.topic}[{ktp.partition}]")
