"""`streamkit reset`: move a group's committed offset, the way past a poison pill.

Under the default `fail` policy a record that cannot be processed stops the worker,
which has committed every record before it: the committed offset *is* the failed
record, so every restart fails on it again. Moving the committed offset past it
(`--skip`) or anywhere else (`--to-offset N`) is how an operator moves on without
changing the app.

A group's offsets belong to its members while it has any: a running worker would
overwrite the move with its next commit, or be told by the broker to rejoin. So
the move is refused while any member is in the group; Kafka itself refuses a
commit from outside a group that has members, which is a second check.

Kafka-protocol brokers are reached with aiokafka directly (no group is joined:
the partition is assigned, and the commit is a "simple" one, generation -1). The
partition is always named in the OffsetFetch: Tansu answers one without a
partition list with a reply aiokafka cannot decode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from .errors import StreamkitError
from .transport.base import TopicPartition


class ResetRefused(StreamkitError):
    """The offset was not moved: the group has members, or the offset is not valid."""


@dataclass(frozen=True)
class OffsetMove:
    group: str
    tp: TopicPartition
    before: int | None  # None: the group had committed nothing on the partition
    after: int

    def describe(self) -> str:
        where = f"{self.tp.topic}[{self.tp.partition}]"
        before = "none" if self.before is None else str(self.before)
        line = f"group {self.group!r}: committed offset of {where}: {before} -> {self.after}"
        if self.before is not None and self.after > self.before:
            n = self.after - self.before
            line += f" ({n} record{'s' if n != 1 else ''} skipped)"
        elif self.before is not None and self.after < self.before:
            line += f" ({self.before - self.after} records to be processed again)"
        return line


def _target(group: str, tp: TopicPartition, before: int | None, to_offset: int | None) -> int:
    """`--to-offset N` as given, or (`--skip`, None) the offset after the committed one."""
    if to_offset is not None:
        return to_offset
    if before is None:
        raise ResetRefused(
            f"group {group!r} has no committed offset on {tp.topic}[{tp.partition}] to skip "
            "past: give --to-offset"
        )
    return before + 1


def _check_range(tp: TopicPartition, offset: int, first: int, end: int) -> None:
    if not first <= offset <= end:
        raise ResetRefused(
            f"offset {offset} is outside {tp.topic}[{tp.partition}], whose records are "
            f"{first}..{end - 1} (give {first} to {end})"
        )


def _refuse_running(group: str, members: int) -> None:
    if members:
        raise ResetRefused(
            f"group {group!r} has {members} running member{'s' if members != 1 else ''}: "
            "stop every worker of the app first (a running worker would commit over the move)"
        )


async def reset_offset(
    broker: str,
    group: str,
    tp: TopicPartition,
    *,
    to_offset: int | None = None,
    client_options: dict[str, Any] | None = None,
) -> OffsetMove:
    """Move `group`'s committed offset on `tp` to `to_offset`, or (None) one past the
    committed offset, when no member is in the group; the move made."""
    if broker.startswith("memory://"):
        return _reset_memory(broker, group, tp, to_offset)
    return await _reset_kafka(broker, group, tp, to_offset, client_options or {})


def _reset_memory(broker: str, group: str, tp: TopicPartition, to_offset: int | None) -> OffsetMove:
    from .transport.memory import MemoryBroker

    memory = MemoryBroker.for_url(broker)
    _refuse_running(group, memory.member_count(group))
    if memory.partition_count(tp.topic) is None:
        raise ResetRefused(f"no topic {tp.topic!r} on {broker}")
    before = memory.committed(group, tp)
    after = _target(group, tp, before, to_offset)
    _check_range(tp, after, memory.start_offset(tp), memory.end_offset(tp))
    memory.commit(group, {tp: after})
    return OffsetMove(group, tp, before, after)


async def _reset_kafka(
    broker: str,
    group: str,
    tp: TopicPartition,
    to_offset: int | None,
    client_options: dict[str, Any],
) -> OffsetMove:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError
    from aiokafka.structs import OffsetAndMetadata

    from .transport.kafka import parse_kafka_url

    servers = parse_kafka_url(broker)
    options = {k: v for k, v in client_options.items() if k in ("request_timeout_ms", "client_id")}
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **options)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, group_id=group, enable_auto_commit=False, **options
    )
    try:
        try:
            await admin.start()
            described = await admin.describe_consumer_groups([group])
            _refuse_running(group, _member_count(described, group))
            partitions = (await admin.describe_topics([tp.topic]))[0]
            if partitions["error_code"] or tp.partition >= len(partitions["partitions"]):
                raise ResetRefused(f"no partition {tp.topic}[{tp.partition}] on {broker}")
            await consumer.start()
            ktp = KafkaTopicPartition(tp.topic, tp.partition)
            consumer.assign([ktp])  # no join: the group stays without members
            committed = await consumer.committed(ktp)
            before = None if committed is None or committed < 0 else int(committed)
            after = _target(group, tp, before, to_offset)
            first, end = await _first_and_end(consumer, ktp)
            _check_range(tp, after, first, end)
            await consumer.commit({ktp: OffsetAndMetadata(after, "")})
        except KafkaError as exc:
            text = str(exc) or type(exc).__name__
            if "Generation" in type(exc).__name__ or "UnknownMember" in type(exc).__name__:
                _refuse_running(group, 1)
            raise ResetRefused(f"broker {broker}: moving the offset failed: {text}") from exc
        except OSError as exc:
            raise ResetRefused(f"broker {broker} is unreachable: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()
    return OffsetMove(group, tp, before, after)


def _member_count(described: list[Any], group: str) -> int:
    """Members of `group` in raw DescribeGroups responses (all versions put the group's
    id second and its member list last)."""
    for response in described:
        for entry in response.groups:
            if entry[1] == group:
                return len(entry[5])
    return 0


async def _first_and_end(consumer: Any, ktp: Any) -> tuple[int, int]:
    """The partition's first offset and its true end: the high watermark of a fetch,
    which is exact on every broker (Tansu's ListOffsets under-reports the end)."""
    first = (await consumer.beginning_offsets([ktp]))[ktp]
    listed = (await consumer.end_offsets([ktp]))[ktp]
    consumer.seek(ktp, max(first, listed - 1))
    await consumer.getmany(ktp, timeout_ms=1000, max_records=1)
    highwater = consumer.highwater(ktp)
    return int(first), int(max(listed, highwater or 0))
