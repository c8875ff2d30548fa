"""memory:// keeps Kafka's transaction rules: the proof of exactly-once rests on them.

Each test pins one rule of Kafka's transactional protocol (KIP-98) as a client sees
it: isolation levels, the last stable offset, markers, fencing by epoch,
transactional offset commits and the transaction timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from streamkit import MemoryBroker
from streamkit.errors import ProducerFenced, TransactionAborted
from streamkit.transport.base import RawRecord, TopicPartition
from streamkit.transport.memory import MemoryTransport

TP = TopicPartition("t", 0)


@pytest.fixture
def broker(memory_url: str) -> MemoryBroker:
    broker = MemoryBroker.for_url(memory_url)
    broker.create_topic("t", 1)
    broker.create_topic("in", 1)
    return broker


def values(records: Sequence[RawRecord]) -> list[bytes | None]:
    return [r.value for r in records]


def send(producer: object, *vals: bytes, tp: TopicPartition = TP) -> None:
    for v in vals:
        producer.send(tp.topic, tp.partition, None, v, (), 0)  # type: ignore[attr-defined]


async def read_all(url: str, read_committed: bool, tp: TopicPartition = TP) -> list[RawRecord]:
    reader = MemoryTransport(url, read_committed=read_committed).reader()
    reader.assign({tp: 0})
    out: list[RawRecord] = []
    while batch := (await reader.getmany(0, 1000)).get(tp):
        out.extend(batch)
    return out


async def test_an_open_transaction_is_seen_only_by_read_uncommitted(
    memory_url: str, broker: MemoryBroker
) -> None:
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"a", b"b")
    assert values(await read_all(memory_url, read_committed=False)) == [b"a", b"b"]
    assert values(await read_all(memory_url, read_committed=True)) == []


async def test_commit_makes_records_visible_and_its_marker_takes_an_offset_never_returned(
    memory_url: str, broker: MemoryBroker
) -> None:
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"a", b"b")
    acked = await producer.commit({}, "app")
    assert acked == {TP: 2}  # the offset after the last record, not after the marker
    committed = await read_all(memory_url, read_committed=True)
    assert [(r.offset, r.value) for r in committed] == [(0, b"a"), (1, b"b")]
    assert broker.end_offset(TP) == 3  # the commit marker sits at offset 2
    reader = MemoryTransport(memory_url, read_committed=True).reader()
    reader.assign({TP: 0})
    await reader.getmany(0, 1000)
    assert reader.position(TP) == 3  # a reader moves past the marker


async def test_abort_hides_records_from_read_committed_for_good(
    memory_url: str, broker: MemoryBroker
) -> None:
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"lost")
    await producer.abort()
    send(producer, b"kept")
    await producer.commit({}, "app")
    assert values(await read_all(memory_url, read_committed=True)) == [b"kept"]
    # read_uncommitted sees aborted data (never markers), as Kafka's consumers do.
    assert values(await read_all(memory_url, read_committed=False)) == [b"lost", b"kept"]


async def test_read_committed_stops_at_the_last_stable_offset(
    memory_url: str, broker: MemoryBroker
) -> None:
    """A plain record after an open transaction waits behind it (Kafka's LSO)."""
    transport = MemoryTransport(memory_url)
    txn = transport.transactional_producer("app-0_0")
    await txn.start()
    send(txn, b"in-txn")
    plain = transport.producer()
    send(plain, b"plain")
    reader = MemoryTransport(memory_url, read_committed=True).reader()
    assert await reader.offsets(TP) == (0, 0)  # the LSO: the open transaction's first offset
    assert values(await read_all(memory_url, read_committed=True)) == []
    await txn.commit({}, "app")
    assert await reader.offsets(TP) == (0, 3)
    assert values(await read_all(memory_url, read_committed=True)) == [b"in-txn", b"plain"]


async def test_a_new_producer_for_the_id_fences_the_old_one_and_aborts_its_transaction(
    memory_url: str, broker: MemoryBroker
) -> None:
    transport = MemoryTransport(memory_url)
    old = transport.transactional_producer("app-0_0")
    await old.start()
    send(old, b"zombie")
    new = transport.transactional_producer("app-0_0")
    await new.start()  # InitProducerId: epoch bumped, the open transaction aborted
    assert values(await read_all(memory_url, read_committed=True)) == []
    send(old, b"after fencing")
    with pytest.raises(ProducerFenced, match="app-0_0"):
        await old.commit({TopicPartition("in", 0): 0}, "app")
    send(new, b"owner")
    await new.commit({}, "app")
    assert values(await read_all(memory_url, read_committed=True)) == [b"owner"]
    # The fenced producer's late record never reached the log.
    assert b"after fencing" not in values(await read_all(memory_url, read_committed=False))


async def test_offsets_sent_to_a_transaction_count_only_when_it_commits(
    memory_url: str, broker: MemoryBroker
) -> None:
    source = TopicPartition("in", 0)
    for i in range(5):
        broker.append("in", 0, None, str(i).encode())
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"x")
    await producer.abort()
    assert broker.committed("app", source) is None
    send(producer, b"y")
    await producer.commit({source: 3}, "app")
    assert broker.committed("app", source) == 3


async def test_offsets_outside_the_log_abort_the_transaction(
    memory_url: str, broker: MemoryBroker
) -> None:
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"x")
    with pytest.raises(TransactionAborted, match="outside the log"):
        await producer.commit({TopicPartition("in", 0): 99}, "app")
    assert values(await read_all(memory_url, read_committed=True)) == []
    assert broker.committed("app", TopicPartition("in", 0)) is None


async def test_the_broker_aborts_a_transaction_past_its_timeout_and_fences_its_producer(
    memory_url: str, broker: MemoryBroker
) -> None:
    now = [100.0]
    broker.transactions.clock = lambda: now[0]
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0", timeout_ms=1000)
    await producer.start()
    send(producer, b"hung")
    now[0] += 0.5
    assert await MemoryTransport(memory_url, read_committed=True).reader().offsets(TP) == (0, 0)
    now[0] += 1.0  # past the timeout: the LSO moves on without the hung producer
    assert await MemoryTransport(memory_url, read_committed=True).reader().offsets(TP) == (0, 2)
    assert values(await read_all(memory_url, read_committed=True)) == []
    with pytest.raises(ProducerFenced):
        await producer.commit({}, "app")


async def test_a_read_committed_group_consumer_skips_aborted_records_and_markers(
    memory_url: str, broker: MemoryBroker
) -> None:
    producer = MemoryTransport(memory_url).transactional_producer("app-0_0")
    await producer.start()
    send(producer, b"a")
    await producer.commit({}, "app")
    send(producer, b"aborted")
    await producer.abort()
    send(producer, b"b")
    await producer.commit({}, "app")

    class Listener:
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...

    got: list[Mapping[TopicPartition, Sequence[RawRecord]]] = []
    for read_committed in (True, False):
        consumer = MemoryTransport(memory_url, read_committed=read_committed).consumer(
            f"g{read_committed}"
        )
        await consumer.start(["t"], Listener())
        got.append(await consumer.getmany(0.01, 100))
        await consumer.stop()
    assert values(got[0][TP]) == [b"a", b"b"]
    assert values(got[1][TP]) == [b"a", b"aborted", b"b"]
