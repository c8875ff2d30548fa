"""Brokers behind one seam: pick the transport from the broker URL's scheme."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import (
    Admin,
    AssignmentPlanner,
    Consumer,
    PartitionReader,
    Producer,
    RawRecord,
    RebalanceListener,
    TopicPartition,
    TopicSpec,
    TransactionalProducer,
    Transport,
)
from .memory import MemoryBroker, MemoryTransport


def transport_for(
    url: str, kafka_options: Mapping[str, Any] | None = None, *, read_committed: bool = False
) -> Transport:
    """The transport for a broker URL; `kafka_options` go to the aiokafka clients;
    `read_committed` hides aborted transactions from its consumers and readers."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        options = kafka_options or {}
        return MemoryTransport(
            url, options.get("auto_offset_reset", "earliest"), read_committed=read_committed
        )
    if scheme == "kafka":
        # Imported here so memory-only use never loads aiokafka.
        from .kafka import KafkaTransport

        return KafkaTransport(url, read_committed=read_committed, **(kafka_options or {}))
    raise ConfigError(f"unknown broker {url!r}: use memory:// or kafka://host:port")


__all__ = [
    "Admin",
    "AssignmentPlanner",
    "Consumer",
    "MemoryBroker",
    "MemoryTransport",
    "PartitionReader",
    "Producer",
    "RawRecord",
    "RebalanceListener",
    "TopicPartition",
    "TopicSpec",
    "TransactionalProducer",
    "Transport",
    "transport_for",
]
