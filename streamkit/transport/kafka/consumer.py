"""The group member: aiokafka's consumer with the framework's offset management."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    OffsetOutOfRangeError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata

from ...errors import CommitRejected, TransportError
from ..base import AssignmentPlanner, Consumer, RawRecord, RebalanceListener, TopicPartition
from ..offset_reset import resume_position
from .assignor import _PlannerAssignor
from .options import KafkaOptions, _connect, _describe, _guard, _stop_quietly

log = logging.getLogger(__name__)

# A fetch answer older than this says nothing about what is waiting now; and samples
# further apart than this were not watching in between (a frozen process).
QUIET_FRESH_S = 2.0

# A commit refused because the group moved on (IllegalStateError: the partitions are
# no longer assigned to this member).
_REBALANCE_ERRORS = (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)


async def _start_consumer(
    url: str, servers: list[str], what: str, **kwargs: Any
) -> AIOKafkaConsumer:
    """Make and connect an aiokafka consumer; group members and readers both start here."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, **kwargs)
    await _connect(url, what, consumer.start, consumer.stop)
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
        # Partitions the framework paused (a full queue, an exactly-once task not
        # ready for input yet): the resume after an assignment leaves them paused.
        self.held: set[KafkaTopicPartition] = set()

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
            self.held -= assigned
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
            self.hold(assigned - self.held, False)

    async def _forward(
        self,
        callback: Callable[[set[TopicPartition]], Awaitable[None]],
        partitions: set[TopicPartition],
    ) -> None:
        try:
            await callback(partitions)
        except Exception as exc:
            self.error = exc


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
        # Since when (monotonic) each partition has been seen caught up, sample after
        # sample; and when the last sample was taken.
        self._quiet_since: dict[KafkaTopicPartition, float] = {}
        self._sampled_at = 0.0

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

    async def _reset_out_of_range(
        self, consumer: AIOKafkaConsumer, fetch_offsets: Mapping[KafkaTopicPartition, int]
    ) -> None:
        """A fetch past the log end (a truncated log): `auto_offset_reset` decides.

        Tansu 0.6 answers such a fetch with no records instead of the error, so this
        path is reached on a real Kafka only.
        """
        tps = list(fetch_offsets)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp, offset in fetch_offsets.items():
            position = resume_position(
                self._options.auto_offset_reset,
                TopicPartition(tp.topic, tp.partition),
                offset,
                firsts[tp],
                ends[tp],
            )
            consumer.seek(tp, position)

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        consumer = self._started()
        self._raise_listener_error()
        try:
            fetched = await _guard(
                self._url,
                f"fetching records for group {self._group_id!r}",
                consumer.getmany(timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records),
            )
        except TransportError as exc:
            if not isinstance(exc.__cause__, OffsetOutOfRangeError):
                raise
            await self._reset_out_of_range(consumer, exc.__cause__.args[0])
            return {}
        self._raise_listener_error()
        self._sample_quiet(consumer)
        return {TopicPartition(tp.topic, tp.partition): records for tp, records in fetched.items()}

    def _sample_quiet(self, consumer: AIOKafkaConsumer) -> None:
        """After each fetch: which partitions a fresh answer shows at their end."""
        now = time.monotonic()
        watched = now - self._sampled_at <= QUIET_FRESH_S
        self._sampled_at = now
        quiet: dict[KafkaTopicPartition, float] = {}
        for ktp in consumer.assignment():
            if self._at_end(consumer, ktp):
                since = self._quiet_since.get(ktp) if watched else None
                quiet[ktp] = now if since is None else since
        self._quiet_since = quiet

    def _end_of(self, consumer: AIOKafkaConsumer, ktp: KafkaTopicPartition) -> int | None:
        """The end the last fetch answer showed: high watermark, or last stable offset."""
        try:
            end = (
                consumer.last_stable_offset(ktp)
                if self._options.isolation_level == "read_committed"
                else consumer.highwater(ktp)
            )
        except (AssertionError, AttributeError, KeyError, IllegalStateError):
            # Not assigned (any more); read from a scrape's thread, a rebalance may be
            # changing the assignment under it.
            return None
        return None if end is None or end < 0 else int(end)

    def _at_end(self, consumer: AIOKafkaConsumer, ktp: KafkaTopicPartition) -> bool:
        try:
            polled_ms = consumer.last_poll_timestamp(ktp)
        except (AssertionError, IllegalStateError):
            return False  # not assigned (any more)
        end = self._end_of(consumer, ktp)
        position = _fetch_position(consumer, ktp)
        if polled_ms is None or end is None or position is None:
            return False
        return position >= end and time.time() * 1000 - polled_ms <= QUIET_FRESH_S * 1000

    def end_offset(self, tp: TopicPartition) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        return self._end_of(consumer, KafkaTopicPartition(tp.topic, tp.partition))

    def position(self, tp: TopicPartition) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        return _fetch_position(consumer, KafkaTopicPartition(tp.topic, tp.partition))

    def _raise_listener_error(self) -> None:
        if self._bridge is not None and self._bridge.error is not None:
            error, self._bridge.error = self._bridge.error, None
            raise error

    def pause(self, tp: TopicPartition) -> None:
        ktp = KafkaTopicPartition(tp.topic, tp.partition)
        if self._bridge is not None:
            self._bridge.held.add(ktp)
        # A partition revoked a moment ago has nothing left to pause or resume.
        try:
            self._started().pause(ktp)
        except IllegalStateError:
            log.debug("pause of %s[%d]: not assigned to this member", tp.topic, tp.partition)

    def resume(self, tp: TopicPartition) -> None:
        ktp = KafkaTopicPartition(tp.topic, tp.partition)
        if self._bridge is not None:
            self._bridge.held.discard(ktp)
        try:
            self._started().resume(ktp)
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

    def request_rejoin(self) -> None:
        # aiokafka's coordinator rejoins (revoking first, eagerly) when this is set, as
        # it does when the group's subscription changes.
        coordinator = getattr(self._started(), "_coordinator", None)
        request = getattr(coordinator, "request_rejoin", None)
        if request is None:
            log.warning(
                "this aiokafka cannot be asked to rejoin group %r: warm-up copies hand "
                "their tasks over at the next rebalance instead",
                self._group_id,
            )
            return
        request()

    def quiet_for(self, tp: TopicPartition) -> float:
        now = time.monotonic()
        if now - self._sampled_at > QUIET_FRESH_S:
            return 0.0  # the fetch loop has not looked lately
        since = self._quiet_since.get(KafkaTopicPartition(tp.topic, tp.partition))
        return 0.0 if since is None else now - since

    async def committed(self, tp: TopicPartition) -> int | None:
        offset = await _guard(
            self._url,
            f"reading the committed offset of {tp.topic}[{tp.partition}] for group "
            f"{self._group_id!r}",
            self._started().committed(KafkaTopicPartition(tp.topic, tp.partition)),
        )
        return None if offset is None or offset < 0 else int(offset)


def _fetch_position(consumer: AIOKafkaConsumer, ktp: KafkaTopicPartition) -> int | None:
    """aiokafka's own fetch position of an assigned partition, or None. (Its public
    `position()` is a coroutine that may wait for a reset; here a missing position
    just means "not known yet".)"""
    try:
        state = consumer._subscription.subscription.assignment.state_value(ktp)
    except (AttributeError, KeyError):
        return None  # not assigned (any more), or an aiokafka this was not written for
    return int(state.position) if state is not None and state.has_valid_position else None


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
