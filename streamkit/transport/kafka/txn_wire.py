"""Two gaps between aiokafka 0.14's protocol tables and newer brokers that
transactions fall into. Both are found on Tansu 0.6; both are no-ops on a broker
that speaks the versions and codes aiokafka knows.

1. InitProducerId at the highest version both sides know, not aiokafka's fixed
   v0. aiokafka knows only v0, and Tansu 0.6 answers v0 with UnknownError
   whenever a transactional id is set, so no transactional producer could start
   there. Tansu accepts v3 (flexible encoding, producer id -1 and epoch -1: "a
   new producer for this id", which bumps the epoch and fences the id's older
   producers as v0 does on Kafka). aiokafka already negotiates versions per
   connection: a `Request` builds the struct of the highest version in its
   classes that the broker's ApiVersions range allows. So the shim only adds a
   v3 struct; a broker whose range ends at v0 still gets v0. It is installed per
   producer (its sender's InitProducerId step), never on aiokafka's module, so
   other producers in the process keep their behaviour.

2. Error code 90, PRODUCER_FENCED (Kafka 2.7, KIP-588), which aiokafka turns
   into a bare UnknownError. Kafka sends it only to request versions newer than
   aiokafka's (older ones get INVALID_PRODUCER_EPOCH, 47), but Tansu sends it to
   every version, so a fenced producer there failed with "UnknownError" instead
   of being told it was fenced. Mapped to aiokafka's InvalidProducerEpoch, which
   every aiokafka handler already treats as fencing. This one has to change
   aiokafka's process-wide code table (its handlers look codes up there); it
   only fills a code aiokafka leaves unknown, so no known code changes meaning.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, kafka_errors
from aiokafka.producer.sender import InitPIDHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

_PRODUCER_FENCED = 90
_API_KEY = 22  # InitProducerId
# What a producer sends the first time: no producer id or epoch to keep (KIP-360).
_NO_PRODUCER_ID = -1
_NO_PRODUCER_EPOCH = -1


class InitProducerIdResponse_v3(Response):
    API_KEY = _API_KEY
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = _API_KEY
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class NegotiatedInitProducerIdRequest(Request[InitProducerIdRequest_v0 | InitProducerIdRequest_v3]):
    """aiokafka's InitProducerIdRequest with v3 added; `prepare` picks the version."""

    API_KEY = _API_KEY

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION >= 3:
            return request_struct_class(
                self._transactional_id,
                self._transaction_timeout_ms,
                _NO_PRODUCER_ID,
                _NO_PRODUCER_EPOCH,
                {},
            )
        return request_struct_class(self._transactional_id, self._transaction_timeout_ms)


class _NegotiatingInitPIDHandler(InitPIDHandler):  # type: ignore[misc]
    """aiokafka's handler (retries, coordinator changes, errors) with our request."""

    def create_request(self) -> NegotiatedInitProducerIdRequest:
        txn_manager = self._sender._txn_manager
        return NegotiatedInitProducerIdRequest(
            txn_manager.transactional_id, txn_manager.transaction_timeout_ms
        )


def negotiate_init_producer_id(producer: AIOKafkaProducer) -> None:
    """Make `producer` send InitProducerId at the negotiated version; call before start."""
    sender = producer._sender

    async def do_init_pid(node_id: int) -> bool:
        handler = _NegotiatingInitPIDHandler(sender)
        return bool(await handler.do(node_id))

    sender._do_init_pid = do_init_pid


def know_producer_fenced_code() -> None:
    """Make aiokafka read error code 90 as fencing (point 2 above); idempotent."""
    kafka_errors.setdefault(_PRODUCER_FENCED, InvalidProducerEpoch)
