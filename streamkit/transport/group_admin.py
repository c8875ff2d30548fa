"""A consumer group's offsets and an app's topics, from outside the group.

What `streamkit reset` reads and changes while no worker of the app runs: how many
members the group has, the committed offsets, each partition's first and end
offsets, the offset at a time, and the deletion of topics or of the records in
them. `memory://` answers from the in-process broker; `kafka://` with aiokafka
(transport/kafka/group_admin.py).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TransportError
from .base import TopicPartition


class GroupAdmin(abc.ABC):
    """One broker, for one command; `close` it after."""

    url: str

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abc.abstractmethod
    async def member_count(self, group: str) -> int:
        """Running members of the group (0 for a group the broker does not know)."""

    @abc.abstractmethod
    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition counts of the topics that exist."""

    @abc.abstractmethod
    async def committed(self, group: str, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """(first offset, true end offset) of the partition."""

    @abc.abstractmethod
    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        """The first offset whose record's timestamp is at or after `timestamp_ms`; the
        end offset when none is. Raises TransportError when the broker cannot say."""

    @abc.abstractmethod
    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit for the group without joining it (the group must have no member)."""

    @abc.abstractmethod
    async def delete_topics(self, topics: Sequence[str]) -> dict[str, str | None]:
        """Delete topics (their committed offsets go with them); per topic, None once
        deleted, or why it was not."""

    @abc.abstractmethod
    async def truncate(
        self, offsets: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, str | None]:
        """Delete each partition's records below the offset (DeleteRecords); per
        partition, None once done, or why it was not."""


class MemoryGroupAdmin(GroupAdmin):
    def __init__(self, url: str) -> None:
        from .memory import MemoryBroker

        self.url = url
        self.broker = MemoryBroker.for_url(url)

    async def member_count(self, group: str) -> int:
        return self.broker.member_count(group)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        counts = {t: self.broker.partition_count(t) for t in topics}
        return {t: n for t, n in counts.items() if n is not None}

    async def committed(self, group: str, tp: TopicPartition) -> int | None:
        return self.broker.committed(group, tp)

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return self.broker.start_offset(tp), self.broker.end_offset(tp)

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        for record in self.broker.records(tp.topic, tp.partition):
            if record.offset >= self.broker.start_offset(tp) and record.timestamp >= timestamp_ms:
                return record.offset
        return self.broker.end_offset(tp)

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        self.broker.commit(group, offsets)

    async def delete_topics(self, topics: Sequence[str]) -> dict[str, str | None]:
        for topic in topics:
            self.broker.delete_topic(topic)
        return dict.fromkeys(topics)

    async def truncate(
        self, offsets: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, str | None]:
        for tp, offset in offsets.items():
            self.broker.delete_records(tp, offset)
        return dict.fromkeys(offsets)


def group_admin_for(url: str, client_options: Mapping[str, Any] | None = None) -> GroupAdmin:
    if url.startswith("memory://"):
        return MemoryGroupAdmin(url)
    if url.startswith("kafka://"):
        from .kafka.group_admin import KafkaGroupAdmin

        return KafkaGroupAdmin(url, dict(client_options or {}))
    raise TransportError(f"unknown broker {url!r}: use memory:// or kafka://host:port")
