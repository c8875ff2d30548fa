"""Topic metadata and creation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.protocol.metadata import MetadataRequest

from ...errors import TransportError
from ..base import Admin, TopicSpec
from .options import KafkaOptions, _connect, _guard

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC_OR_PARTITION = 3


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
            await _connect(self._url, "connecting admin client", admin.start, admin.close)
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
