"""Exactly-once on kafka://: the transactional producer and read_committed clients,
against the session's real broker (Tansu unless STREAMKIT_TEST_BROKER says
otherwise), plus the InitProducerId version negotiation without a broker.

What Tansu 0.6 cannot show, isolation from aborted transactions (it hands their
records to read_committed readers), is proven on memory:// instead.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import InvalidProducerEpoch, for_code
from aiokafka.protocol.api import RequestHeader_v1, RequestHeader_v2
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from test_kafka_transport import Listener, collect, read_to_end

from streamkit.errors import ConfigError, ProducerFenced, TransactionAborted
from streamkit.transport import TopicPartition, TopicSpec
from streamkit.transport.kafka import KafkaTransactionalProducer, KafkaTransport
from streamkit.transport.kafka.txn_wire import (
    InitProducerIdRequest_v3,
    InitProducerIdResponse_v3,
    NegotiatedInitProducerIdRequest,
    know_producer_fenced_code,
    negotiate_init_producer_id,
)

OPTIONS: dict[str, Any] = {"session_timeout_ms": 6000}
INIT_PRODUCER_ID = 22


def kafka(url: str, **options: Any) -> KafkaTransport:
    return KafkaTransport(url, **{**OPTIONS, **options})


# no broker needed ---------------------------------------------------------------------


@pytest.mark.parametrize("broker_max", [0, 1, 2])
def test_init_producer_id_stays_v0_for_a_broker_without_v3(broker_max: int) -> None:
    request = NegotiatedInitProducerIdRequest("task-0_1", 60_000)
    struct = request.prepare({INIT_PRODUCER_ID: (0, broker_max)})
    assert isinstance(struct, InitProducerIdRequest_v0)
    # Byte for byte what aiokafka itself sends, with its non-flexible header.
    assert struct.encode() == InitProducerIdRequest_v0("task-0_1", 60_000).encode()
    assert isinstance(struct.build_request_header(1, "c"), RequestHeader_v1)


@pytest.mark.parametrize("broker_max", [3, 4, 5])
def test_init_producer_id_is_v3_for_a_broker_that_has_it(broker_max: int) -> None:
    struct = NegotiatedInitProducerIdRequest("task-0_1", 60_000).prepare(
        {INIT_PRODUCER_ID: (0, broker_max)}
    )
    assert isinstance(struct, InitProducerIdRequest_v3)
    assert isinstance(struct.build_request_header(1, "c"), RequestHeader_v2)
    decoded = InitProducerIdRequest_v3.decode(struct.encode())
    # A new producer for the id: no producer id or epoch of its own to keep.
    assert (decoded.transactional_id, decoded.transaction_timeout_ms) == ("task-0_1", 60_000)
    assert (decoded.producer_id, decoded.producer_epoch) == (-1, -1)


async def test_a_producer_with_the_shim_takes_its_id_from_a_v3_answer() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", transactional_id="task-0_1")
    negotiate_init_producer_id(producer)
    sent: list[Any] = []

    async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
        sent.append(request.prepare({INIT_PRODUCER_ID: (0, 4)}))
        return InitProducerIdResponse_v3(0, 0, 7, 3, {})

    producer.client.send = send  # type: ignore[method-assign]
    try:
        assert await producer._sender._do_init_pid(0)
        assert [type(s) for s in sent] == [InitProducerIdRequest_v3]
        txn = producer._txn_manager
        assert txn is not None
        assert (txn.producer_id, txn.producer_epoch) == (7, 3)
    finally:
        await producer.stop()


def test_producer_fenced_code_reads_as_fencing() -> None:
    know_producer_fenced_code()
    assert for_code(90) is InvalidProducerEpoch


def test_read_committed_transports_read_committed() -> None:
    url = "kafka://127.0.0.1:9092"
    # The flag wins over the option: exactly-once must never read aborted records.
    eos = KafkaTransport(url, read_committed=True, isolation_level="read_uncommitted")
    assert eos.read_committed
    assert eos.options.fetching()["isolation_level"] == "read_committed"
    assert KafkaTransport(url, isolation_level="read_committed").read_committed
    assert not KafkaTransport(url).read_committed
    with pytest.raises(ConfigError, match="isolation_level must be one of"):
        KafkaTransport(url, isolation_level="committed")


# on the broker --------------------------------------------------------------------------


async def committed_offsets(
    transport: KafkaTransport, group_id: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offsets, read without joining it (a join costs 3 s on Tansu)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=transport.servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {tp: await consumer.committed(KafkaTopicPartition(*tp)) for tp in tps}
    finally:
        await consumer.stop()


async def started(transport: KafkaTransport, transactional_id: str) -> KafkaTransactionalProducer:
    producer = transport.transactional_producer(transactional_id, timeout_ms=30_000)
    await producer.start()
    return producer


async def test_a_committed_transaction_carries_its_records_and_the_groups_offsets(
    kafka_url: str,
    topic_name: Any,
) -> None:
    transport = kafka(kafka_url, read_committed=True)
    out, source, group = topic_name("out"), topic_name("in"), topic_name("group")
    await transport.admin().create_topics([TopicSpec(out, 2), TopicSpec(source, 2)])
    producer = await started(transport, topic_name("tx"))
    out0, out1 = TopicPartition(out, 0), TopicPartition(out, 1)
    in0, in1 = TopicPartition(source, 0), TopicPartition(source, 1)
    try:
        for i in range(3):
            producer.send(out, 0, b"k", b"a%d" % i, [("h", b"1")], 1000 + i)
        producer.send(out, 1, None, b"b0", (), 2000)
        acked = await producer.commit({in0: 5, in1: 7}, group)
        assert acked == {out0: 3, out1: 1}
        # A second transaction on the same producer; acked offsets are cumulative and
        # step over the first transaction's commit marker.
        producer.send(out, 0, b"k", b"a3", (), 1003)
        acked = await producer.commit({in0: 6}, group)
        assert acked[out1] == 1 and acked[out0] >= 4
        # Offsets alone make a transaction too; nothing sent and no offsets, none.
        assert await producer.commit({in1: 8}, group) == acked
        assert await producer.commit({}, group) == acked
        # Sent and committed at once, before any batch went out: still committed.
        producer.send(out, 1, None, b"b1", (), 2001)
        assert (await producer.commit({}, group))[out1] >= 2

        # Read while the producer is open: its stop would end a transaction left open.
        assert await committed_offsets(transport, group, [in0, in1]) == {in0: 6, in1: 8}
        reader = transport.reader()
        await reader.start()
        try:
            reader.assign({out0: 0, out1: 0})
            got = await read_to_end(reader, [out0, out1], max_records=100)
        finally:
            await reader.stop()
    finally:
        await producer.stop()
    assert [r.value for r in got[out0]] == [b"a0", b"a1", b"a2", b"a3"]
    assert [(r.key, r.timestamp, list(r.headers)) for r in got[out0][:1]] == [
        (b"k", 1000, [("h", b"1")])
    ]
    assert [r.value for r in got[out1]] == [b"b0", b"b1"]


@pytest.mark.parametrize(
    ("sent_before_the_fence", "then"),
    [(True, "send"), (False, "send"), (True, "commit"), (True, "abort")],
)
async def test_a_second_producer_with_the_same_id_fences_the_first(
    kafka_url: str,
    topic_name: Any,
    sent_before_the_fence: bool,
    then: str,
) -> None:
    """The first learns it is fenced from its next request, whichever it is.

    With records delivered and no offsets to add, only EndTxn is left to tell it
    ("commit", "abort"). Kafka answers that with a fencing error; Tansu closes
    the connection instead, which aiokafka retries for ever, so the producer
    gives up after the request timeout (3 s here) and reports itself fenced.
    """
    transport = kafka(kafka_url, request_timeout_ms=3000)
    out, group, tx = topic_name("out"), topic_name("group"), topic_name("tx")
    source = TopicPartition(topic_name("in"), 0)
    await transport.admin().create_topics([TopicSpec(out, 1), TopicSpec(source.topic, 1)])
    first = await started(transport, tx)
    second: KafkaTransactionalProducer | None = None
    try:
        if sent_before_the_fence:
            first.send(out, 0, None, b"zombie", (), 1000)
            await first.flush()
        second = await started(transport, tx)
        deadline = time.monotonic() + 10
        with pytest.raises(ProducerFenced, match=tx):
            if then == "send":
                first.send(out, 0, None, b"zombie-2", (), 1000)
                await first.commit({source: 3}, group)
            elif then == "commit":
                await first.commit({}, group)
            else:
                await first.abort()
        assert time.monotonic() < deadline
        # Fenced for good, whatever it is asked next.
        with pytest.raises(ProducerFenced):
            await first.flush()
        with pytest.raises(ProducerFenced):
            await first.abort()
        # The new owner's transaction is the one that counts.
        second.send(out, 0, None, b"owner", (), 1000)
        await second.commit({source: 1}, group)
        assert await committed_offsets(transport, group, [source]) == {source: 1}
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


async def test_an_aborted_transaction_commits_no_offsets_and_the_next_one_commits(
    kafka_url: str,
    topic_name: Any,
) -> None:
    """abort() returns, and the offsets of an aborted transaction are never committed.

    Whether its records stay hidden from read_committed readers is not checked
    here: Tansu 0.6 hands aborted records to them (it keeps no aborted-transaction
    index), so isolation is proven on memory://, which models Kafka's rules.
    """
    transport = kafka(kafka_url, read_committed=True)
    out, group = topic_name("out"), topic_name("group")
    source = TopicPartition(topic_name("in"), 0)
    await transport.admin().create_topics([TopicSpec(out, 1), TopicSpec(source.topic, 1)])
    producer = await started(transport, topic_name("tx"))
    try:
        producer.send(out, 0, None, b"aborted", (), 1000)
        await producer.flush()
        await producer.abort()
        await producer.abort()  # no transaction open: nothing to do
        assert await committed_offsets(transport, group, [source]) == {source: None}

        # A commit that fails (a partition the topic does not have) aborts the
        # transaction, offsets included, and says why.
        producer.send(out, 0, None, b"fine", (), 1000)
        producer.send(out, 5, None, b"nowhere", (), 1000)
        with pytest.raises(TransactionAborted, match=r"no partition 5") as failure:
            await producer.commit({source: 4}, group)
        assert producer.transactional_id in str(failure.value)
        assert await committed_offsets(transport, group, [source]) == {source: None}

        # The producer goes on with a new transaction.
        producer.send(out, 0, None, b"committed", (), 1000)
        await producer.commit({source: 2}, group)
    finally:
        await producer.stop()
    assert await committed_offsets(transport, group, [source]) == {source: 2}


async def test_read_committed_clients_see_a_transaction_once_it_commits(
    kafka_url: str,
    topic_name: Any,
) -> None:
    """A read_committed reader's end is the last stable offset: an open transaction's
    records are past it until the commit (a read_uncommitted reader sees them at
    once); then reader and group member alike get them."""
    committed, uncommitted = kafka(kafka_url, read_committed=True), kafka(kafka_url)
    out, group = topic_name("out"), topic_name("group")
    await committed.admin().create_topics([TopicSpec(out, 1)])
    tp = TopicPartition(out, 0)
    producer = await started(committed, topic_name("tx"))
    reader, dirty = committed.reader(), uncommitted.reader()
    consumer = committed.consumer(group)
    await reader.start()
    await dirty.start()
    try:
        for i in range(3):
            producer.send(out, 0, None, b"v%d" % i, (), 1000)
        await producer.flush()
        reader.assign({tp: 0})
        dirty.assign({tp: 0})
        assert [r.value for r in (await read_to_end(dirty, [tp], max_records=10))[tp]] == [
            b"v0",
            b"v1",
            b"v2",
        ]
        assert (await reader.offsets(tp))[1] == 0
        assert await reader.getmany(0.2, 10) == {}

        await producer.commit({}, group)
        end = (await reader.offsets(tp))[1]
        assert end >= 3  # past the records (on Kafka, past the commit marker too)
        got = await read_to_end(reader, [tp], max_records=10)
        assert [r.value for r in got[tp]] == [b"v0", b"v1", b"v2"]
        assert reader.position(tp) >= end

        await consumer.start([out], Listener())
        members = await collect(consumer, lambda got: sum(map(len, got.values())) >= 3)
        assert [r.value for r in members[tp]] == [b"v0", b"v1", b"v2"]
    finally:
        await consumer.stop()
        await reader.stop()
        await dirty.stop()
        await producer.stop()


async def test_stop_aborts_an_open_transaction(
    kafka_url: str,
    topic_name: Any,
) -> None:
    """Records sent and never committed must not count: stopping aborts them, so a
    read_committed reader's end moves past them without a commit."""
    transport = kafka(kafka_url, read_committed=True)
    out = topic_name("out")
    await transport.admin().create_topics([TopicSpec(out, 1)])
    tp = TopicPartition(out, 0)
    producer = await started(transport, topic_name("tx"))
    producer.send(out, 0, None, b"left open", (), 1000)
    await producer.flush()
    await producer.stop()
    reader = transport.reader()
    await reader.start()
    try:
        reader.assign({tp: 0})
        deadline = time.monotonic() + 10
        while (await reader.offsets(tp))[1] < 1:
            assert time.monotonic() < deadline, "the open transaction was never ended"
    finally:
        await reader.stop()
