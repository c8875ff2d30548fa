"""The memory transport keeps Kafka's contract where streamkit relies on it."""

import asyncio

import pytest

from streamkit import MemoryBroker, TransportError
from streamkit.transport import TopicPartition, TopicSpec, transport_for


class Recorder:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned -= revoked

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned |= assigned


async def test_offsets_timestamps_headers(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 2)])
    producer = transport.producer()
    for i in range(3):
        producer.send("t", 1, b"k", b"v%d" % i, [("h", b"x")], 1000 + i)
    await producer.flush()
    records = MemoryBroker.for_url(memory_url).records("t", 1)
    assert [(r.offset, r.timestamp, r.value, r.headers) for r in records] == [
        (0, 1000, b"v0", (("h", b"x"),)),
        (1, 1001, b"v1", (("h", b"x"),)),
        (2, 1002, b"v2", (("h", b"x"),)),
    ]
    assert MemoryBroker.for_url(memory_url).records("t", 0) == []


async def test_produce_errors_surface_on_flush(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 2)])
    producer = transport.producer()
    producer.send("t", 5, None, b"v", (), 0)
    with pytest.raises(TransportError, match="has 2 partitions, no partition 5"):
        await producer.flush()
    producer.send("nope", 0, None, b"v", (), 0)
    with pytest.raises(TransportError, match="unknown topic 'nope'"):
        await producer.flush()


async def test_new_group_starts_earliest_and_resumes_from_commit(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 1)])
    broker = MemoryBroker.for_url(memory_url)
    for i in range(5):
        broker.append("t", 0, None, b"%d" % i)
    consumer = transport.consumer("g")
    listener = Recorder()
    await consumer.start(["t"], listener)
    got = await consumer.getmany(timeout_s=1, max_records=3)
    assert listener.assigned == {TopicPartition("t", 0)}
    assert [r.offset for r in got[TopicPartition("t", 0)]] == [0, 1, 2]
    await consumer.commit({TopicPartition("t", 0): 3})
    await consumer.stop()

    again = transport.consumer("g")
    await again.start(["t"], Recorder())
    got = await again.getmany(timeout_s=1, max_records=100)
    assert [r.offset for r in got[TopicPartition("t", 0)]] == [3, 4]
    assert await again.committed(TopicPartition("t", 0)) == 3
    await again.stop()


async def test_one_member_per_group(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 1)])
    first = transport.consumer("g")
    await first.start(["t"], Recorder())
    with pytest.raises(TransportError, match="use kafka:// to run several"):
        await transport.consumer("g").start(["t"], Recorder())
    await first.stop()


async def test_pause_and_resume(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 2)])
    broker = MemoryBroker.for_url(memory_url)
    consumer = transport.consumer("g")
    await consumer.start(["t"], Recorder())
    await consumer.getmany(timeout_s=0.01, max_records=10)
    consumer.pause(TopicPartition("t", 0))
    broker.append("t", 0, None, b"a")
    broker.append("t", 1, None, b"b")
    got = await consumer.getmany(timeout_s=1, max_records=10)
    assert list(got) == [TopicPartition("t", 1)]
    consumer.resume(TopicPartition("t", 0))
    got = await consumer.getmany(timeout_s=1, max_records=10)
    assert [r.value for r in got[TopicPartition("t", 0)]] == [b"a"]
    await consumer.stop()


async def test_getmany_wakes_on_new_records(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 1)])
    consumer = transport.consumer("g")
    await consumer.start(["t"], Recorder())
    broker = MemoryBroker.for_url(memory_url)
    asyncio.get_running_loop().call_later(0.05, broker.append, "t", 0, None, b"late")
    got = await consumer.getmany(timeout_s=5, max_records=10)
    assert [r.value for r in got[TopicPartition("t", 0)]] == [b"late"]
    await consumer.stop()


async def test_commit_outside_log_is_refused(memory_url: str) -> None:
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 1)])
    consumer = transport.consumer("g")
    await consumer.start(["t"], Recorder())
    with pytest.raises(TransportError, match="outside the log"):
        await consumer.commit({TopicPartition("t", 0): 7})
    await consumer.stop()


async def test_quiet_only_when_nothing_waits_past_the_position(memory_url: str) -> None:
    """What idle windows rely on: records waiting (paused, or not fetched yet) are
    input late in coming, not quiet input."""
    transport = transport_for(memory_url)
    await transport.admin().create_topics([TopicSpec("t", 1)])
    tp = TopicPartition("t", 0)
    consumer = transport.consumer("g")
    await consumer.start(["t"], Recorder())
    await consumer.getmany(0.01, 10)
    assert consumer.quiet_for(tp) > 0
    MemoryBroker.for_url(memory_url).append("t", 0, b"k", b"v")
    assert consumer.quiet_for(tp) == 0
    consumer.pause(tp)
    assert await consumer.getmany(0.01, 10) == {}
    assert consumer.quiet_for(tp) == 0
    consumer.resume(tp)
    assert len((await consumer.getmany(0.01, 10))[tp]) == 1
    assert consumer.quiet_for(tp) > 0
    MemoryBroker.for_url(memory_url).expire_member("g")
    assert consumer.quiet_for(tp) == 0  # out of the group: it knows nothing any more
