"""`GroupAdmin` on aiokafka: a group's offsets and an app's topics from outside the group.

No group is joined: partitions are assigned to a consumer that carries the group's
id, and its commits are "simple" ones (generation -1), which Kafka accepts only
while the group has no member. Partitions are always named in an OffsetFetch:
Tansu answers one without a partition list with a reply aiokafka cannot decode.
Tansu (0.6) deletes topics (and their committed offsets), but closes the connection
on DeleteRecords, and answers a ListOffsets by a time after the last record with
offset 0 (timestamp -1) where Kafka answers none: each answer's timestamp is checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import OffsetAndMetadata

from ...errors import TransportError
from ..base import TopicPartition
from ..group_admin import GroupAdmin
from .admin import KafkaAdmin
from .options import KafkaOptions, _connect, _describe, _guard, parse_kafka_url


class KafkaGroupAdmin(GroupAdmin):
    def __init__(self, url: str, client_options: dict[str, Any]) -> None:
        self.url = url
        self._servers = parse_kafka_url(url)
        self._options = KafkaOptions.from_options(url, client_options)
        self._admin: AIOKafkaAdminClient | None = None
        self._topics = KafkaAdmin(url, self._servers, self._options)
        self._consumers: dict[str | None, AIOKafkaConsumer] = {}

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, **self._options.common())
            await _connect(self.url, "connecting admin client", admin.start, admin.close)
            self._admin = admin
        return self._admin

    async def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        """A consumer with the group's id that never joins it (partitions are assigned);
        with None, one outside any group, for reading."""
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                group_id=group,
                enable_auto_commit=False,
                **self._options.common(),
            )
            await _connect(self.url, "connecting a consumer", consumer.start, consumer.stop)
            self._consumers[group] = consumer
        return consumer

    async def close(self) -> None:
        for consumer in self._consumers.values():
            with contextlib.suppress(Exception):
                await consumer.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        await self._topics.close()

    async def member_count(self, group: str) -> int:
        admin = await self._client()
        described = await _guard(
            self.url, f"describing group {group!r}", admin.describe_consumer_groups([group])
        )
        # Every version of the response puts the group's id second, its members last.
        for response in described:
            for entry in response.groups:
                if entry[1] == group:
                    return len(entry[5])
        return 0

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        return await self._topics.partition_counts(topics)

    async def committed(self, group: str, tp: TopicPartition) -> int | None:
        consumer = await self._consumer(group)
        ktp = self._assigned(consumer, tp)
        offset = await _guard(
            self.url, f"reading the committed offset of {_name(tp)}", consumer.committed(ktp)
        )
        return None if offset is None or offset < 0 else int(offset)

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """The end is the high watermark of a fetch, exact on every broker (Tansu's
        ListOffsets gives the first offset of the last batch + 1)."""
        consumer = await self._consumer(None)
        ktp = self._assigned(consumer, tp)
        what = f"reading the offsets of {_name(tp)}"
        first = (await _guard(self.url, what, consumer.beginning_offsets([ktp])))[ktp]
        listed = (await _guard(self.url, what, consumer.end_offsets([ktp])))[ktp]
        consumer.seek(ktp, max(first, listed - 1))
        await _guard(self.url, what, consumer.getmany(ktp, timeout_ms=1000, max_records=1))
        return int(first), int(max(listed, consumer.highwater(ktp) or 0))

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        consumer = await self._consumer(None)
        ktp = self._assigned(consumer, tp)
        what = f"looking up {_name(tp)} by time"
        found = (await _guard(self.url, what, consumer.offsets_for_times({ktp: timestamp_ms})))[ktp]
        if found is None:
            return (await self.bounds(tp))[1]
        if found.timestamp < timestamp_ms:
            raise TransportError(
                f"broker {self.url}: {what} answered offset {found.offset} with timestamp "
                f"{found.timestamp}, before {timestamp_ms}: this broker's time index is not to "
                "be trusted here (Tansu answers a time after the last record with offset 0); "
                "give --to-offset"
            )
        return int(found.offset)

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        consumer = await self._consumer(group)
        request = {
            self._assigned(consumer, tp): OffsetAndMetadata(o, "") for tp, o in offsets.items()
        }
        await _guard(self.url, f"committing offsets of group {group!r}", consumer.commit(request))

    async def delete_topics(self, topics: Sequence[str]) -> dict[str, str | None]:
        if not topics:
            return {}
        admin = await self._client()
        try:
            response = await admin.delete_topics(list(topics))
        except (KafkaError, OSError) as exc:
            return dict.fromkeys(topics, _describe(exc))
        result: dict[str, str | None] = {}
        for topic, code, *_ in response.topic_error_codes:
            result[topic] = None if code == 0 else for_code(code).__name__
        return result

    async def truncate(
        self, offsets: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, str | None]:
        if not offsets:
            return {}
        admin = await self._client()
        request = {
            KafkaTopicPartition(tp.topic, tp.partition): RecordsToDelete(before_offset=o)
            for tp, o in offsets.items()
        }
        try:
            await admin.delete_records(request, timeout_ms=self._options.request_timeout_ms)
        except (KafkaError, OSError) as exc:
            return dict.fromkeys(offsets, _describe(exc))
        return dict.fromkeys(offsets)

    @staticmethod
    def _assigned(consumer: AIOKafkaConsumer, tp: TopicPartition) -> KafkaTopicPartition:
        """Assign the partition (adding it to those assigned): no group join."""
        ktp = KafkaTopicPartition(tp.topic, tp.partition)
        assigned = consumer.assignment()
        if ktp not in assigned:
            consumer.assign([*assigned, ktp])
        return ktp


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"
