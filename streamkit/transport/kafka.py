"""`kafka://`: the transport for Kafka and Kafka-protocol brokers, built on aiokafka.

This is how streamkit scales: every worker process joins one consumer group and
the broker hands each its share of partitions. The clients are configured for the
framework's own offset management (no auto-commit, a new group reads from the
earliest offset) and for throughput: the producer builds record batches itself
and hands aiokafka whole batches, which measured about twice the rate of one
`send()` per record. Restores, standby replicas and global tables read with a
`KafkaReader`, a consumer outside any group that reads chosen partitions from
chosen offsets.

Every aiokafka failure leaves this module as a `TransportError` that names the
broker URL and the operation, so a user sees what to fix rather than a client
library's traceback.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, codec
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    LeaderNotAvailableError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import OffsetAndMetadata, RecordMetadata

from ..errors import CommitRejected, ConfigError, TransportError
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
from .offset_reset import POLICIES, resume_position

log = logging.getLogger(__name__)

T = TypeVar("T")

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSION_TYPES = (None, "gzip", "snappy", "lz4", "zstd")
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC_OR_PARTITION = 3


def parse_kafka_url(url: str) -> list[str]:
    """`kafka://h1:9092,h2:9092` -> `["h1:9092", "h2:9092"]`; the port defaults to 9092."""
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ConfigError(f"broker {url!r} is not a kafka:// URL (kafka://host:port[,host:port])")
    if "@" in rest:
        # Keeps secrets out of URLs, which end up in logs and error messages.
        raise ConfigError(
            "kafka:// URLs take no credentials: pass username and password as client options"
        )
    servers: list[str] = []
    for part in rest.strip().strip("/").split(","):
        server = part.strip()
        if not server:
            continue
        host, colon, port = server.rpartition(":")
        if not colon or host.endswith(":") or "]" in port:
            server, host, port = f"{server}:9092", server, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"broker {url!r}: {part.strip()!r} is not host:port (kafka://host:port[,host:port])"
            )
        servers.append(server)
    if not servers:
        raise ConfigError(f"broker {url!r} names no host: use kafka://host:port[,host:port]")
    return servers


@dataclass(frozen=True)
class KafkaOptions:
    """The client options `KafkaTransport` accepts, checked once when it is made."""

    # every client
    client_id: str = "streamkit"
    request_timeout_ms: int = 40_000
    retry_backoff_ms: int = 100
    metadata_max_age_ms: int = 300_000
    connections_max_idle_ms: int = 540_000
    # TLS and SASL
    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # consumer
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int | None = None
    max_poll_interval_ms: int = 300_000
    rebalance_timeout_ms: int | None = None
    # When a committed offset is below the log start (retention deleted records that
    # were never processed): "earliest", "latest" or "fail". New groups start earliest.
    auto_offset_reset: str = "earliest"
    # How long a fetch may wait at the end of the log. Kafka answers as soon as data
    # arrives; Tansu holds the fetch for the whole wait, so the 500 ms client default
    # put ~130 ms on the median latency there (25 ms: p50 18 ms, p99 27 ms at 5k/s).
    fetch_max_wait_ms: int = 25
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    isolation_level: str = "read_uncommitted"
    # producer. Outputs of one processed batch already share record batches (the
    # task processes a batch without yielding to the loop), so lingering only
    # delays them: at 5,000 records/s, 5 ms took p50 from 21 to 25 ms, p99 from 44 to
    # 50 ms, and throughput did not change. Raise it for many small sends (timers).
    linger_ms: float = 0.0
    max_batch_size: int = 65_536
    max_request_size: int = 1_048_576
    compression_type: str | None = None
    # made from the TLS settings once, so a bad certificate path fails up front
    _tls: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any]) -> KafkaOptions:
        known = [name for name in cls.__dataclass_fields__ if not name.startswith("_")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"broker {url!r}: unknown kafka client option(s) {', '.join(unknown)}; "
                f"known options: {', '.join(sorted(known))}"
            )
        opts = cls(**options)
        opts._check(url)
        return opts

    def _check(self, url: str) -> None:
        def fail(message: str) -> None:
            raise ConfigError(f"broker {url!r}: {message}")

        if self.security_protocol not in _SECURITY_PROTOCOLS:
            fail(f"security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism not in _SASL_MECHANISMS:
            fail(f"sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}")
        sasl = self.security_protocol.startswith("SASL_")
        if (self.username is not None or self.password is not None) and not sasl:
            fail(
                "username/password are only sent with security_protocol SASL_SSL or "
                f"SASL_PLAINTEXT, not {self.security_protocol}"
            )
        if sasl and (self.username is None or self.password is None):
            fail(f"security_protocol {self.security_protocol} needs username and password")
        tls_files = (self.cafile, self.certfile, self.keyfile)
        if self.ssl_context is not None and any(tls_files):
            fail("give either ssl_context or cafile/certfile/keyfile, not both")
        if (self.ssl_context is not None or any(tls_files)) and not self.security_protocol.endswith(
            "SSL"
        ):
            fail(
                f"TLS settings need security_protocol SSL or SASL_SSL, not {self.security_protocol}"
            )
        if self.auto_offset_reset not in POLICIES:
            fail("auto_offset_reset must be earliest, latest or fail")
        if self.compression_type not in _COMPRESSION_TYPES:
            fail(f"compression_type must be one of {', '.join(map(str, _COMPRESSION_TYPES))}")
        if self.compression_type is not None and not _codec_available(self.compression_type):
            fail(
                f"compression_type {self.compression_type!r} needs its library: "
                f"pip install 'aiokafka[{self.compression_type}]'"
            )
        if self.session_timeout_ms <= 0 or self.heartbeat_ms >= self.session_timeout_ms:
            fail(
                f"heartbeat_interval_ms ({self.heartbeat_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.linger_ms < 0:
            fail(f"linger_ms must be >= 0, got {self.linger_ms}")
        if self.max_batch_size <= 0:
            fail(f"max_batch_size must be > 0, got {self.max_batch_size}")
        if self.security_protocol.endswith("SSL"):
            context = self.ssl_context
            if context is None:
                try:
                    context = create_ssl_context(
                        cafile=self.cafile, certfile=self.certfile, keyfile=self.keyfile
                    )
                except (OSError, ssl.SSLError) as exc:
                    fail(f"cannot load the TLS files (cafile/certfile/keyfile): {exc}")
            object.__setattr__(self, "_tls", context)

    @property
    def heartbeat_ms(self) -> int:
        # A third of the session timeout, as Kafka recommends, and no slower than
        # aiokafka's 3 s: heartbeats are how a member learns of a rebalance.
        if self.heartbeat_interval_ms is not None:
            return self.heartbeat_interval_ms
        return max(1, min(3000, self.session_timeout_ms // 3))

    def common(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes."""
        kwargs: dict[str, Any] = {
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "connections_max_idle_ms": self.connections_max_idle_ms,
            "security_protocol": self.security_protocol,
            "ssl_context": self._tls,
        }
        if self.security_protocol.startswith("SASL_"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return kwargs

    def fetching(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka consumer: group members and readers."""
        kwargs = self.common()
        kwargs.update(
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_max_bytes=self.fetch_max_bytes,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            isolation_level=self.isolation_level,
        )
        return kwargs

    def consumer(self) -> dict[str, Any]:
        kwargs = self.fetching()
        kwargs.update(
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
        )
        return kwargs

    def reader(self) -> dict[str, Any]:
        kwargs = self.fetching()
        # A reader always seeks, so a reset could only come from an offset
        # outside the log: report it rather than silently jump to either end.
        kwargs.update(auto_offset_reset="none")
        return kwargs

    def producer(self) -> dict[str, Any]:
        kwargs = self.common()
        kwargs.update(
            acks="all",
            compression_type=self.compression_type,
            max_batch_size=self.max_batch_size,
            max_request_size=self.max_request_size,
            # Batches reach aiokafka already sealed; our own timer does the lingering.
            linger_ms=0,
        )
        return kwargs


def _codec_available(name: str) -> bool:
    check: Callable[[], bool] = getattr(codec, f"has_{name}", lambda: False)
    return check()


_CLIENT_ERRORS = (KafkaError, ConsumerStoppedError, OSError)
# A commit refused because the group moved on (IllegalStateError: the partitions are
# no longer assigned to this member).
_REBALANCE_ERRORS = (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)


async def _guard(url: str, what: str, call: Awaitable[T]) -> T:
    """Await an aiokafka call, turning its errors into a TransportError about `what`."""
    try:
        return await call
    except _CLIENT_ERRORS as exc:
        raise TransportError(f"broker {url}: {what} failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


# consumer ---------------------------------------------------------------------------


async def _start_consumer(
    url: str, servers: list[str], what: str, **kwargs: Any
) -> AIOKafkaConsumer:
    """Make and connect an aiokafka consumer; group members and readers both start here."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, **kwargs)
    try:
        await _guard(url, what, consumer.start())
    except BaseException:
        await _stop_quietly(consumer.stop())
        raise
    return consumer


class _ListenerBridge(ConsumerRebalanceListener):
    """Hands aiokafka's rebalance callbacks to ours, in our partition type.

    aiokafka logs and swallows an exception raised by a listener, which would
    leave a task half restored without anyone noticing; the bridge keeps the
    exception so that the consumer's next `getmany` raises it.
    """

    def __init__(
        self,
        listener: RebalanceListener,
        check_positions: Callable[[set[KafkaTopicPartition]], Awaitable[None]],
    ) -> None:
        self._listener = listener
        self._check_positions = check_positions
        self.error: BaseException | None = None
        self.consumer: AIOKafkaConsumer | None = None

    def hold(self, partitions: set[KafkaTopicPartition], paused: bool) -> None:
        if self.consumer is not None and partitions:
            if paused:
                self.consumer.pause(*partitions)
            else:
                self.consumer.resume(*partitions)

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        # aiokafka also reports an empty revocation before a member's first join.
        if revoked and self.error is None:
            await self._forward(
                self._listener.on_partitions_revoked,
                {TopicPartition(tp.topic, tp.partition) for tp in revoked},
            )

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        if self.error is None:
            # aiokafka hands out records of these partitions as soon as it assigned
            # them; hold them back until our listener has made their tasks.
            self.hold(assigned, True)
            try:
                await self._check_positions(assigned)
            except Exception as exc:
                self.error = exc
                return
            await self._forward(
                self._listener.on_partitions_assigned,
                {TopicPartition(tp.topic, tp.partition) for tp in assigned},
            )
            self.hold(assigned, False)

    async def _forward(
        self,
        callback: Callable[[set[TopicPartition]], Awaitable[None]],
        partitions: set[TopicPartition],
    ) -> None:
        try:
            await callback(partitions)
        except Exception as exc:
            self.error = exc


class _PlannerAssignor(AbstractPartitionAssignor):
    """aiokafka's assignor hook around a transport-neutral AssignmentPlanner."""

    name = "streamkit-tasks"
    version = 1

    def __init__(self, planner: AssignmentPlanner) -> None:
        self._planner = planner

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), self._planner.member_metadata()
        )

    def assign(  # type: ignore[override]
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        plan = self._planner.assign({m: meta.user_data for m, meta in members.items()})
        assignments = {}
        for member, (partitions, data) in plan.items():
            by_topic: dict[str, list[int]] = {}
            for tp in partitions:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            assignments[member] = ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in by_topic.items()), data
            )
        return assignments

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        self._planner.on_assignment(assignment.user_data)


class KafkaConsumer(Consumer):
    """One member of a consumer group; the framework commits, never aiokafka."""

    def __init__(
        self,
        url: str,
        servers: list[str],
        group_id: str,
        options: KafkaOptions,
        planner: AssignmentPlanner | None = None,
    ) -> None:
        self._url = url
        self._servers = servers
        self._group_id = group_id
        self._options = options
        self._planner = planner
        self._consumer: AIOKafkaConsumer | None = None
        self._bridge: _ListenerBridge | None = None

    @property
    def raw(self) -> AIOKafkaConsumer:
        """The aiokafka consumer, for what the transport seam does not cover yet."""
        return self._started()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise TransportError(
                f"broker {self._url}: consumer of group {self._group_id!r} is not started"
            )
        return self._consumer

    async def start(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        consumer = await _start_consumer(
            self._url,
            self._servers,
            f"connecting consumer of group {self._group_id!r}",
            group_id=self._group_id,
            **self._options.consumer(),
            **(
                {"partition_assignment_strategy": (_PlannerAssignor(self._planner),)}
                if self._planner is not None
                else {}
            ),
        )
        try:
            self._bridge = _ListenerBridge(listener, self._check_committed_in_log)
            self._bridge.consumer = consumer
            consumer.subscribe(topics=list(topics), listener=self._bridge)
            _leave_even_from_generation_zero(consumer)
        except BaseException:
            await _stop_quietly(consumer.stop())
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _guard(
                self._url, f"stopping consumer of group {self._group_id!r}", consumer.stop()
            )

    async def _check_committed_in_log(self, assigned: set[KafkaTopicPartition]) -> None:
        """Apply `auto_offset_reset` to committed offsets that retention has overtaken.

        aiokafka would reset them silently; a user needs to hear that records were
        deleted before they were processed, with the partition and both offsets.
        """
        if not assigned or self._consumer is None:
            return
        consumer = self._consumer
        policy = self._options.auto_offset_reset
        firsts = await consumer.beginning_offsets(list(assigned))
        for tp in sorted(assigned):
            committed = await consumer.committed(tp)
            first = firsts[tp]
            if committed is None or committed >= first:
                continue
            end = (await consumer.end_offsets([tp]))[tp]
            position = resume_position(
                policy, TopicPartition(tp.topic, tp.partition), committed, first, end
            )
            consumer.seek(tp, position)

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        consumer = self._started()
        self._raise_listener_error()
        fetched = await _guard(
            self._url,
            f"fetching records for group {self._group_id!r}",
            consumer.getmany(timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records),
        )
        self._raise_listener_error()
        return {TopicPartition(tp.topic, tp.partition): records for tp, records in fetched.items()}

    def _raise_listener_error(self) -> None:
        if self._bridge is not None and self._bridge.error is not None:
            error, self._bridge.error = self._bridge.error, None
            raise error

    def pause(self, tp: TopicPartition) -> None:
        # A partition revoked a moment ago has nothing left to pause or resume.
        try:
            self._started().pause(KafkaTopicPartition(tp.topic, tp.partition))
        except IllegalStateError:
            log.debug("pause of %s[%d]: not assigned to this member", tp.topic, tp.partition)

    def resume(self, tp: TopicPartition) -> None:
        try:
            self._started().resume(KafkaTopicPartition(tp.topic, tp.partition))
        except IllegalStateError:
            log.debug("resume of %s[%d]: not assigned to this member", tp.topic, tp.partition)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._started().seek(KafkaTopicPartition(tp.topic, tp.partition), offset)
        except IllegalStateError:
            log.debug("seek of %s[%d]: not assigned to this member", tp.topic, tp.partition)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        consumer = self._started()
        request = {
            KafkaTopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "")
            for tp, offset in offsets.items()
        }
        try:
            await consumer.commit(request)
        except (KafkaError, OSError) as exc:
            where = ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items())
            error = CommitRejected if isinstance(exc, _REBALANCE_ERRORS) else TransportError
            raise error(
                f"broker {self._url}: commit of group {self._group_id!r} ({where}) failed: "
                f"{_describe(exc)}"
            ) from exc

    async def committed(self, tp: TopicPartition) -> int | None:
        offset = await _guard(
            self._url,
            f"reading the committed offset of {tp.topic}[{tp.partition}] for group "
            f"{self._group_id!r}",
            self._started().committed(KafkaTopicPartition(tp.topic, tp.partition)),
        )
        return None if offset is None or offset < 0 else int(offset)


def _leave_even_from_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Make a stopping member leave its group on brokers that number generations from 0.

    aiokafka sends LeaveGroup only when its generation is > 0. Kafka's first
    generation is 1, but Tansu's is 0, so there the first member of a group
    left silently and whoever joined next waited a whole session timeout for
    it to expire (11 s instead of 3 s with a 6 s session). A no-op on Kafka.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    original = getattr(coordinator, "_maybe_leave_group", None)
    send = getattr(coordinator, "_send_req", None)
    if coordinator is None or original is None or send is None:
        return  # another aiokafka than the one this was written for: keep its behaviour

    async def maybe_leave_group() -> None:
        if coordinator.generation != 0 or getattr(coordinator, "_group_instance_id", None):
            await original()
            return
        try:
            await send(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        except KafkaError as exc:
            log.debug("LeaveGroup of group %s failed: %s", coordinator.group_id, exc)
        coordinator.reset_generation()

    coordinator._maybe_leave_group = maybe_leave_group


# reader -----------------------------------------------------------------------------

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


# producer ---------------------------------------------------------------------------

_Key = tuple[str, int]
_NO_HEADERS: list[tuple[str, bytes]] = []


class KafkaProducer(Producer):
    """Builds one record batch per partition and hands aiokafka whole batches.

    `send` only appends to the open batch of its partition. A batch goes out when
    it is full, when it has lingered `linger_ms`, or at `flush`. Each partition
    has at most one coroutine (its pump) submitting batches, one after the
    other: aiokafka's accumulator holds one queued batch per partition and its
    sender has one request per partition in flight, re-queueing a retried batch
    at the front, so batches reach the log in the order we sealed them.

    `flush` returns, per partition, the offset after the last acknowledged
    record: the broker acknowledges a batch with its base offset, and each
    pump knows how many records the batch held.
    """

    def __init__(self, url: str, servers: list[str], options: KafkaOptions) -> None:
        self._url = url
        self._servers = servers
        self._options = options
        self._linger_s = options.linger_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[_Key, BatchBuilder] = {}
        self._sealed: dict[_Key, collections.deque[tuple[BatchBuilder, asyncio.Future[None]]]] = {}
        self._pumps: dict[_Key, asyncio.Task[None]] = {}
        self._outstanding: list[asyncio.Future[None]] = []
        self._errors: dict[_Key, BaseException] = {}
        # Per partition, the offset after the last record the broker acknowledged.
        self._acked: dict[TopicPartition, int] = {}
        self._dirty = asyncio.Event()
        self._linger_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def raw(self) -> AIOKafkaProducer:
        """The aiokafka producer, for what the transport seam does not cover yet."""
        if self._producer is None:
            raise TransportError(f"broker {self._url}: producer is not started")
        return self._producer

    async def start(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._servers, **self._options.producer())
        try:
            await _guard(self._url, "connecting producer", producer.start())
        except BaseException:
            await _stop_quietly(producer.stop())
            raise
        self._producer = producer
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._linger_task = self._loop.create_task(self._linger(), name="streamkit-linger")

    async def stop(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            self._seal_all()
            if self._outstanding:
                await asyncio.wait(self._outstanding)
        finally:
            self._producer = None
            if self._linger_task is not None:
                self._linger_task.cancel()
                await asyncio.gather(self._linger_task, return_exceptions=True)
                self._linger_task = None
            await _guard(self._url, "stopping producer", producer.stop())
        if self._errors:
            log.warning("producer stopped with undelivered records: %s", self._error_text())
            self._errors.clear()

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        batch_key = (topic, partition)
        if headers.__class__ is not list:
            # aiokafka's compiled batch builder takes only lists (and never keeps them).
            headers = list(headers) if headers else _NO_HEADERS
        batch = self._open.get(batch_key)
        if batch is None:
            batch = self._open[batch_key] = self.raw.create_batch()
            self._dirty.set()
        if batch.append(timestamp=timestamp_ms, key=key, value=value, headers=headers) is None:
            # Full: seal it and start a new one. A record that alone exceeds
            # max_batch_size still fits an empty batch (aiokafka always takes the
            # first record) and the broker judges its size.
            self._seal(batch_key, batch)
            batch = self._open[batch_key] = self.raw.create_batch()
            self._dirty.set()
            batch.append(timestamp=timestamp_ms, key=key, value=value, headers=headers)

    async def flush(self) -> Mapping[TopicPartition, int]:
        """Wait for every batch sealed so far, whoever sealed it.

        Several tasks flush the one producer at once: each must wait for all
        deliveries outstanding at its call, including batches another flush sealed,
        or it could commit offsets whose outputs are not acknowledged. A failed
        delivery stays reported to every later flush: records were lost, so no task
        of this worker may commit past them (the worker stops; its successor retries
        from the last commit).
        """
        self._seal_all()
        snapshot = list(self._outstanding)
        if snapshot:
            await asyncio.wait(snapshot)
            self._outstanding = [f for f in self._outstanding if not f.done()]
        if self._errors:
            first = next(iter(self._errors.values()))
            raise TransportError(self._error_text()) from first
        # A copy: deliveries of batches sealed after this call go on updating ours.
        return dict(self._acked)

    def _error_text(self) -> str:
        (topic, partition), error = next(iter(self._errors.items()))
        others = len(self._errors) - 1
        more = f" (and {others} more partition(s))" if others else ""
        text = error if isinstance(error, TransportError) else _describe(error)
        return f"broker {self._url}: producing to {topic}[{partition}] failed: {text}{more}"

    async def _linger(self) -> None:
        # Sleeps while nothing is open, so an idle producer costs no wake-ups.
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._linger_s)
            self._dirty.clear()
            self._seal_all()

    def _seal_all(self) -> None:
        open_batches, self._open = self._open, {}
        for batch_key, batch in open_batches.items():
            if batch.record_count():
                self._seal(batch_key, batch)

    def _seal(self, batch_key: _Key, batch: BatchBuilder) -> None:
        assert self._loop is not None
        batch.close()
        done: asyncio.Future[None] = self._loop.create_future()
        self._outstanding.append(done)
        queue = self._sealed.get(batch_key)
        if queue is None:
            queue = self._sealed[batch_key] = collections.deque()
        queue.append((batch, done))
        if batch_key not in self._pumps:
            self._pumps[batch_key] = self._loop.create_task(self._pump(batch_key, queue))

    async def _pump(
        self,
        batch_key: _Key,
        queue: collections.deque[tuple[BatchBuilder, asyncio.Future[None]]],
    ) -> None:
        topic, partition = batch_key
        try:
            while queue:
                batch, done = queue.popleft()
                try:
                    producer = self.raw
                    partitions = await producer.partitions_for(topic)
                    if partition not in partitions:
                        raise TransportError(
                            f"topic {topic!r} has {len(partitions)} partitions, "
                            f"no partition {partition}"
                        )
                    delivery = await producer.send_batch(batch, topic, partition=partition)
                except Exception as exc:
                    self._fail(batch_key, done, exc)
                    # The partition's later batches would land after a gap: drop
                    # them too, flush reports the partition as failed.
                    while queue:
                        self._fail(batch_key, queue.popleft()[1], exc)
                    continue
                count = batch.record_count()
                delivery.add_done_callback(
                    lambda fut, done=done, count=count: self._delivered(batch_key, count, done, fut)
                )
        finally:
            if self._pumps.get(batch_key) is asyncio.current_task():
                del self._pumps[batch_key]
            if not queue:
                self._sealed.pop(batch_key, None)

    def _delivered(
        self,
        batch_key: _Key,
        count: int,
        done: asyncio.Future[None],
        fut: asyncio.Future[RecordMetadata],
    ) -> None:
        if fut.cancelled():
            self._fail(batch_key, done, asyncio.CancelledError("delivery cancelled"))
        elif (error := fut.exception()) is not None:
            self._fail(batch_key, done, error)
        else:
            # A batch's metadata carries its base offset: its records follow it.
            end = fut.result().offset + count
            tp = TopicPartition(*batch_key)
            if end > self._acked.get(tp, 0):
                self._acked[tp] = end
            if not done.done():
                done.set_result(None)

    def _fail(self, batch_key: _Key, done: asyncio.Future[None], error: BaseException) -> None:
        self._errors.setdefault(batch_key, error)
        if not done.done():
            done.set_result(None)


# admin ------------------------------------------------------------------------------


class KafkaAdmin(Admin):
    """Connects on first use: the seam gives admins no start(), and a worker only
    needs one for a moment at start-up, to make its topics match its declarations."""

    def __init__(self, url: str, servers: list[str], options: KafkaOptions) -> None:
        self._url = url
        self._servers = servers
        self._options = options
        self._admin: AIOKafkaAdminClient | None = None

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, **self._options.common())
            try:
                await _guard(self._url, "connecting admin client", admin.start())
            except BaseException:
                await _stop_quietly(admin.close())
                raise
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await _guard(self._url, "closing admin client", admin.close())

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        if not topics:
            return {}
        admin = await self._client()
        # aiokafka's describe_topics asks with auto-creation allowed, and brokers
        # such as Tansu then create the topic being asked about; ask without it.
        request = MetadataRequest(list(topics), allow_auto_topic_creation=False)
        client = admin._client
        response = await _guard(
            self._url,
            f"reading metadata of topic(s) {', '.join(topics)}",
            client.send(client.get_random_node(), request),
        )
        counts: dict[str, int] = {}
        for topic in response.to_object()["topics"]:
            code = topic["error_code"]
            if code == _UNKNOWN_TOPIC_OR_PARTITION:
                continue
            if code != 0 and for_code(code).retriable:
                # A topic being created (LEADER_NOT_AVAILABLE...) counts once it lists
                # its partitions; until then it is reported as not there yet.
                if topic["partitions"]:
                    counts[topic["topic"]] = len(topic["partitions"])
                continue
            if code != 0:
                raise TransportError(
                    f"broker {self._url}: reading metadata of topic {topic['topic']!r} failed: "
                    f"{for_code(code).__name__}"
                )
            counts[topic["topic"]] = len(topic["partitions"])
        return counts

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        if not specs:
            return
        admin = await self._client()
        names = ", ".join(spec.name for spec in specs)
        new_topics = [
            NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=dict(spec.config),
            )
            for spec in specs
        ]
        response = await _guard(
            self._url, f"creating topic(s) {names}", admin.create_topics(new_topics)
        )
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code in (0, _TOPIC_ALREADY_EXISTS):
                continue
            detail = entry.get("error_message") or ""
            raise TransportError(
                f"broker {self._url}: creating topic {entry['topic']!r} failed: "
                f"{for_code(code).__name__}{': ' + detail if detail else ''}"
            )
        await self._await_visible(specs)

    async def _await_visible(self, specs: Sequence[TopicSpec]) -> None:
        # A real cluster answers CreateTopics before every broker's metadata has
        # the topic; a consumer subscribing at once would see nothing to assign.
        names = [spec.name for spec in specs]
        deadline = asyncio.get_running_loop().time() + self._options.request_timeout_ms / 1000
        while True:
            counts = await self.partition_counts(names)
            missing = [name for name in names if name not in counts]
            if not missing:
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise TransportError(
                    f"broker {self._url}: created topic(s) {', '.join(missing)} did not appear "
                    f"in the metadata within {self._options.request_timeout_ms} ms"
                )
            await asyncio.sleep(0.05)


# transport --------------------------------------------------------------------------


async def _stop_quietly(call: Awaitable[Any]) -> None:
    try:
        await call
    except Exception:
        log.debug("cleanup after a failed start raised", exc_info=True)


class KafkaTransport(Transport):
    """One set of options for every client of a worker, checked here so that a typo
    or a missing TLS file fails at start-up rather than at the first rebalance."""

    def __init__(self, url: str, *, read_committed: bool = False, **client_options: Any) -> None:
        self.url = url
        self.servers = parse_kafka_url(url)
        self.options = KafkaOptions.from_options(url, client_options)
        self.read_committed = read_committed

    def consumer(self, group_id: str, planner: AssignmentPlanner | None = None) -> KafkaConsumer:
        return KafkaConsumer(self.url, self.servers, group_id, self.options, planner)

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self.url, self.servers, self.options)

    def transactional_producer(
        self, transactional_id: str, timeout_ms: int = 60_000
    ) -> TransactionalProducer:
        raise NotImplementedError("exactly-once on kafka:// is being built (issue 10)")

    def admin(self) -> KafkaAdmin:
        return KafkaAdmin(self.url, self.servers, self.options)

    def reader(self) -> KafkaReader:
        return KafkaReader(self.url, self.servers, self.options)


__all__ = [
    "KafkaAdmin",
    "KafkaConsumer",
    "KafkaOptions",
    "KafkaProducer",
    "KafkaReader",
    "KafkaTransport",
    "parse_kafka_url",
]
