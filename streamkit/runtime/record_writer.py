"""Serializes, partitions and queues output records on the worker's producer."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from ..errors import SerdeError, StreamkitError
from ..events import Event
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
        # A str key's remembered route (`Topic.route`), else worked out.
        route = topic.routes.get(key) if key.__class__ is str and partition is None else None
        if route is not None and route[2] == topic.partitions:
            key_bytes, partition, _ = route
        else:
            try:
                key_bytes = topic.key_serde.serialize(key)
            except Exception as exc:
                raise SerdeError(
                    f"cannot serialize key {key!r} for topic {topic.name!r}: {exc}"
                ) from exc
            if partition is None:
                partition = topic.route(key, key_bytes)
            elif not 0 <= partition < topic.partitions:
                raise StreamkitError(
                    f"topic {topic.name!r} has {topic.partitions} partitions, "
                    f"no partition {partition}"
                )
        try:
            value_bytes = topic.value_serde.serialize(value)
        except Exception as exc:
            raise SerdeError(
                f"cannot serialize value of type {type(value).__name__} for topic "
                f"{topic.name!r}: {exc}"
            ) from exc
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        self.producer.send(topic.name, partition, key_bytes, value_bytes, headers, timestamp_ms)

    def write_batch(self, topic: Topic, outputs: Iterable[Any], timestamp_ms: int | None) -> None:
        """A batch's outputs to one topic: `Event`s with their own key, value, headers
        and timestamp, `(key, value)` pairs with `timestamp_ms` and no headers.

        `write` with its lookups hoisted out of the loop. A key without a remembered
        route, or a value that fails to serialize, goes through `write`, which works
        it out or raises as it would.
        """
        routes = topic.routes
        partitions = topic.partitions
        serialize = topic.value_serde.serialize
        send = self.producer.send
        name = topic.name
        for out in outputs:
            if out.__class__ is Event:
                key, value, headers, timestamp = out.key, out.value, out.headers, out.timestamp
            elif out.__class__ is tuple and len(out) == 2:
                (key, value), headers, timestamp = out, (), timestamp_ms
            else:
                raise StreamkitError(
                    f"a batch's outputs are events or (key, value) pairs, not {type(out).__name__}"
                )
            route = routes.get(key) if key.__class__ is str else None
            if route is not None and route[2] == partitions and timestamp is not None:
                try:
                    value_bytes = serialize(value)
                except Exception:
                    pass
                else:
                    send(name, route[1], route[0], value_bytes, headers, timestamp)
                    continue
            self.write(topic, key, value, headers, timestamp)

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
