"""`kafka://`: the transport for Kafka and Kafka-protocol brokers, built on aiokafka.

This is how streamkit scales: every worker process joins one consumer group and
the broker hands each its share of partitions. The clients are configured for the
framework's own offset management (no auto-commit, a new group reads from the
earliest offset) and for throughput: the producer builds record batches itself
and hands aiokafka whole batches, which measured about twice the rate of one
`send()` per record. Restores, standby replicas and global tables read with a
`KafkaReader`, a consumer outside any group that reads chosen partitions from
chosen offsets. Exactly-once gives each task a `KafkaTransactionalProducer` and
reads with `isolation_level="read_committed"` (`read_committed=True`).

Every aiokafka failure leaves this module as a `TransportError` that names the
broker URL and the operation, so a user sees what to fix rather than a client
library's traceback.
"""

from __future__ import annotations

from typing import Any

from ..base import AssignmentPlanner, Transport
from .admin import KafkaAdmin
from .consumer import KafkaConsumer
from .options import KafkaOptions, parse_kafka_url
from .producer import KafkaProducer
from .reader import KafkaReader
from .transactional import KafkaTransactionalProducer


class KafkaTransport(Transport):
    """One set of options for every client of a worker, checked here so that a typo
    or a missing TLS file fails at start-up rather than at the first rebalance."""

    def __init__(self, url: str, *, read_committed: bool = False, **client_options: Any) -> None:
        self.url = url
        self.servers = parse_kafka_url(url)
        if read_committed:
            # Exactly-once reads only committed records, whatever the options say.
            client_options = {**client_options, "isolation_level": "read_committed"}
        self.options = KafkaOptions.from_options(url, client_options)
        self.read_committed = self.options.isolation_level == "read_committed"

    def consumer(self, group_id: str, planner: AssignmentPlanner | None = None) -> KafkaConsumer:
        return KafkaConsumer(self.url, self.servers, group_id, self.options, planner)

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self.url, self.servers, self.options)

    def transactional_producer(
        self, transactional_id: str, timeout_ms: int = 60_000
    ) -> KafkaTransactionalProducer:
        return KafkaTransactionalProducer(
            self.url, self.servers, self.options, transactional_id, timeout_ms
        )

    def admin(self) -> KafkaAdmin:
        return KafkaAdmin(self.url, self.servers, self.options)

    def reader(self) -> KafkaReader:
        return KafkaReader(self.url, self.servers, self.options)


__all__ = [
    "KafkaAdmin",
    "KafkaConsumer",
    "KafkaOptions",
    "KafkaProducer",
    "KafkaReader",
    "KafkaTransactionalProducer",
    "KafkaTransport",
    "parse_kafka_url",
]
