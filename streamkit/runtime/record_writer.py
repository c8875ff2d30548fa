"""Serializes, partitions and queues output records on the worker's producer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from ..errors import SerdeError, StreamkitError
from ..topic import Topic
from ..transport.base import Headers, Producer, TopicPartition


class RecordWriter:
    """Every output of a worker goes through here: agent yields, app.send, dead letters."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def write(
        self,
        topic: Topic,
        key: Any,
        value: Any,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        try:
            key_bytes = topic.key_serde.serialize(key)
        except Exception as exc:
            raise SerdeError(
                f"cannot serialize key {key!r} for topic {topic.name!r}: {exc}"
            ) from exc
        try:
            value_bytes = topic.value_serde.serialize(value)
        except Exception as exc:
            raise SerdeError(
                f"cannot serialize value of type {type(value).__name__} for topic "
                f"{topic.name!r}: {exc}"
            ) from exc
        if partition is None:
            partition = topic.partition_of(key_bytes)
        elif not 0 <= partition < topic.partitions:
            raise StreamkitError(
                f"topic {topic.name!r} has {topic.partitions} partitions, no partition {partition}"
            )
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        self.producer.send(topic.name, partition, key_bytes, value_bytes, headers, timestamp_ms)

    def write_raw(
        self,
        topic: Topic,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
        partition: int | None = None,
    ) -> None:
        if partition is None:
            partition = topic.partition_of(key)
        self.producer.send(topic.name, partition, key, value, headers, timestamp_ms)

    async def flush(self) -> Mapping[TopicPartition, int]:
        """Wait until every output so far is acknowledged; offsets reached per partition."""
        return await self.producer.flush()


# The writer of the task whose agent or processor is running: `app.send` inside one
# writes through it, so under exactly-once the record is part of the task's
# transaction.
current_writer: ContextVar[RecordWriter] = ContextVar("streamkit_current_writer")
