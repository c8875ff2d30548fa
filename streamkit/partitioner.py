"""Kafka's default partitioner, so that streamkit, Java and librdkafka producers agree.

A key's partition is `toPositive(murmur2(key_bytes)) % partitions`, as in
`org.apache.kafka.clients.producer.internals.BuiltInPartitioner`. aiokafka ships the
same murmur2 (checked against Kafka's own test vectors in tests/test_partitioner.py).
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)
def _positive_hash(key: bytes) -> int:
    # The pure-Python hash costs microseconds; hot keys repeat, so memoise them.
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    return _positive_hash(key) % partitions
