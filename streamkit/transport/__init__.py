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
    Transport,
)
from .memory import MemoryBroker, MemoryTransport


def transport_for(url: str, kafka_options: Mapping[str, Any] | None = None) -> Transport:
    """The transport for a broker URL; `kafka_options` go to the aiokafka clients."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        options = kafka_options or {}
        return MemoryTransport(url, options.get("auto_offset_reset", "earliest"))
    if scheme == "kafka":
        # Imported here so memory-only use never loads aiokafka.
        from .kafka import KafkaTransport

        return KafkaTransport(url, **(kafka_options or {}))
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
    "Transport",
    "transport_for",
]
