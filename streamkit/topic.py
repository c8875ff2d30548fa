"""A topic as the app declares it: name, partitions, serdes and its bad-input policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .partitioner import MURMUR2, UNMEMOISED, Partitioner
from .serde import JsonSerde, Serde, StrSerde, serde_for
from .transport.base import RawRecord, TopicSpec

# Serdes whose output depends on the key alone (so do the built-in partitioners').
_PURE_KEY_SERDES = (StrSerde, JsonSerde)
_ROUTES_MAX = 65_536


class ErrorPolicy(StrEnum):
    """What happens to a record that cannot be processed."""

    FAIL = "fail"  # stop the worker with the reason; the record stays uncommitted
    SKIP = "skip"  # log it, count it, go on
    DEAD_LETTER = "dead_letter"  # raw bytes to `{app_id}-dlq` with the error in headers


@dataclass(eq=False)
class Topic:
    name: str
    key_type: Any = str
    value_type: Any = Any
    # None: adopt the broker's count if the topic exists, else the app's default.
    declared_partitions: int | None = None
    default_partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)
    on_error: ErrorPolicy = ErrorPolicy.FAIL
    # Where its producers put a key: streamkit writes there too, and a table write of
    # another key than the record's own is checked against it.
    partitioner: Partitioner = MURMUR2
    key_serde: Serde[Any] = field(init=False)
    value_serde: Serde[Any] = field(init=False)
    partitions: int = field(init=False)

    def __post_init__(self) -> None:
        self.on_error = ErrorPolicy(self.on_error)
        self.partitioner = Partitioner(self.partitioner)
        self.partitions = self.declared_partitions or self.default_partitions
        # False while the count is a placeholder: partitions=None and the broker not
        # yet asked (checks that compare counts wait for the broker's).
        self.partitions_known = self.declared_partitions is not None
        self.key_serde = serde_for(self.key_type)
        self.value_serde = serde_for(self.value_type)
        self._next_unkeyed = 0
        # str key -> (key bytes, partition, partition count): see `route`.
        self.routes: dict[str, tuple[bytes, int, int]] = {}

    def route(self, key: Any, key_bytes: bytes | None) -> int:
        """The partition of a key the record writer has no route for, worked out and,
        for a str key whose serde and partitioner depend on the key alone (a user's may
        not), kept: an app writing the same keys over and over then serializes and
        hashes each once rather than per record. Bounded, forgotten whole when full; an
        entry holds the partition count it was worked out for, so a topic whose count
        changes gets its keys worked out again. A kept route's hash skips the
        partitioner's own memo: over a million keys neither memo holds what comes next,
        and the second cost 0.3-0.45 us a record."""
        of = UNMEMOISED.get(self.partitioner.of)
        if (
            of is not None
            and key.__class__ is str
            and key_bytes is not None
            and self.key_serde.__class__ in _PURE_KEY_SERDES
        ):
            partition = of(key_bytes, self.partitions)
            if len(self.routes) >= _ROUTES_MAX:
                self.routes.clear()
            self.routes[key] = (key_bytes, partition, self.partitions)
            return partition
        return self.partition_of(key_bytes)

    def partition_of(self, key_bytes: bytes | None) -> int:
        """The topic's partitioner for keys (murmur2 by default), round-robin for null keys."""
        if key_bytes is not None:
            return self.partitioner.of(key_bytes, self.partitions)
        self._next_unkeyed = (self._next_unkeyed + 1) % self.partitions
        return self._next_unkeyed

    def decode(self, record: RawRecord) -> tuple[Any, Any]:
        """A consumed record's key and value, e.g. to read an output topic in a test."""
        return self.key_serde.deserialize(record.key), self.value_serde.deserialize(record.value)

    def spec(self) -> TopicSpec:
        return TopicSpec(self.name, self.partitions, self.replication_factor, dict(self.config))

    def __repr__(self) -> str:
        return f"<Topic {self.name} partitions={self.partitions}>"
