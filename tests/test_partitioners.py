"""Input partitioned by other producers than Java's: librdkafka's CRC32 and the user's own.

A table write of the record's own key is accepted whatever partitioner put the
record in its task; another key is checked with the source topic's partitioner,
which streamkit also uses to write to that topic (DESIGN.md invariant 5). The
Tansu test produces with confluent-kafka's default producer, as a librdkafka
user would.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, read, running, wait_for

import streamkit as sk
from streamkit.partitioner import crc32_partition, partition_for
from streamkit.runtime.worker import Worker
from streamkit.transport.memory import MemoryBroker

KEYS = [f"user-{i}" for i in range(40)]


def crc32_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def test_keys_where_crc32_and_murmur2_disagree_exist() -> None:
    # Without such keys the tests below could not tell the partitioners apart.
    moved = [k for k in KEYS if crc32_of(k, 4) != partition_for(k.encode(), 4)]
    assert len(moved) > 20


def test_a_topic_writes_keys_with_its_partitioner() -> None:
    app = sk.App("parts")
    java = app.topic("java", partitions=4)
    rdkafka = app.topic("rdkafka", partitions=4, partitioner="crc32")
    own = app.topic("own", partitions=4, partitioner=lambda key, n: len(key) % n)
    for key in (k.encode() for k in KEYS):
        assert java.partition_of(key) == partition_for(key, 4)
        assert rdkafka.partition_of(key) == crc32_partition(key, 4) == zlib.crc32(key) % 4
        assert own.partition_of(key) == len(key) % 4
    with pytest.raises(sk.ConfigError, match=r"unknown partitioner 'fnv'.*'crc32'"):
        app.topic("bad", partitioner="fnv")
    with pytest.raises(sk.ConfigError, match="declared twice"):
        app.topic("java", partitions=4, partitioner="crc32")


class _Sent:
    """A producer that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes | None]] = []

    def send(self, topic: str, partition: int, key: bytes | None, *_: Any) -> None:
        self.sent.append((topic, partition, key))


def test_a_remembered_key_route_follows_the_topics_partition_count() -> None:
    # The writer remembers where a str key goes; a topic whose count changes (a test
    # driver's app run again on a broker with another count) must not get the old one.
    from streamkit.runtime.record_writer import RecordWriter

    app = sk.App("routes")
    topic = app.topic("t", partitions=4)
    producer = _Sent()
    writer = RecordWriter(producer)  # type: ignore[arg-type]
    for _ in range(2):
        for key in KEYS:
            writer.write(topic, key, "v", (), 1)
    topic.partitions = 7
    for key in KEYS:
        writer.write(topic, key, "v", (), 1)
    expected = [partition_for(k.encode(), 4) for k in KEYS] * 2
    expected += [partition_for(k.encode(), 7) for k in KEYS]
    assert [p for _, p, _ in producer.sent] == expected
    assert [k for _, _, k in producer.sent] == [k.encode() for k in KEYS] * 3


def test_a_users_partitioner_is_asked_for_every_record() -> None:
    # A user's function may depend on more than the key: it is never memoised.
    from streamkit.runtime.record_writer import RecordWriter

    calls: Counter[bytes] = Counter()

    def rotating(key: bytes, partitions: int) -> int:
        calls[key] += 1
        return calls[key] % partitions

    app = sk.App("routes-own")
    topic = app.topic("t", partitions=3, partitioner=rotating)
    producer = _Sent()
    writer = RecordWriter(producer)  # type: ignore[arg-type]
    for _ in range(3):
        writer.write(topic, "k", "v", (), 1)
    assert [p for _, p, _ in producer.sent] == [1, 2, 0]


async def put_as_librdkafka_would(app: sk.App, topic: sk.Topic, keys: list[str]) -> None:
    """Each key in its CRC32 partition, as confluent-kafka's default producer puts it."""
    for key in keys:
        await app.send(topic, key=key, value="/", partition=crc32_of(key, topic.partitions))


async def test_a_table_counts_input_a_librdkafka_producer_partitioned(
    memory_url: str, tmp_path: Path
) -> None:
    # The topic is declared as most apps declare it, without a partitioner: each
    # record's own key is in its task by construction.
    app = sk.App("crc", broker=memory_url, data_dir=tmp_path)
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=4)
    counted = app.topic("counted", key_type=str, value_type=int, partitions=4)
    counts = app.table("counts", value_type=int, default=int)

    @app.agent(clicks, sink=counted)
    async def count(stream: sk.Stream) -> Any:
        async for user, _ in stream.items():
            counts[user] += 1
            yield user, counts[user]

    keys = KEYS * 3
    await put_as_librdkafka_would(app, clicks, keys)
    async with running(app):
        await wait_for(lambda: len(read(app, counted)) == len(keys))
    last: dict[str, int] = {}
    for user, n in read(app, counted):
        last[user] = max(last.get(user, 0), n)
    assert last == dict(Counter(keys))


async def test_a_records_own_key_is_found_in_its_chunk_past_transaction_markers(
    memory_url: str, tmp_path: Path
) -> None:
    # A transactional producer leaves a commit marker after each transaction: the
    # offsets of a task's chunk have gaps, and the record in hand (whose key vouches
    # for a table write of it) is not at its offset's distance from the chunk's first.
    app = sk.App("gaps", broker=memory_url, data_dir=tmp_path)
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=4)
    counted = app.topic("counted", key_type=str, value_type=int, partitions=4)
    counts = app.table("counts", value_type=int, default=int)

    @app.agent(clicks, sink=counted)
    async def count(stream: sk.Stream) -> Any:
        async for user, _ in stream.items():
            counts[user] += 1
            yield user, counts[user]

    broker = MemoryBroker.for_url(memory_url)
    broker.create_topic("clicks", 4)
    _, epoch = broker.transactions.init_producer("librdkafka-app", 60_000)
    # Keys that murmur2 puts elsewhere: only the record in hand vouches for them.
    keys = [k for k in KEYS if crc32_of(k, 4) != partition_for(k.encode(), 4)] * 3
    for key in keys:
        txn = ("librdkafka-app", epoch)
        broker.append("clicks", crc32_of(key, 4), key.encode(), b'"/"', transaction=txn)
        broker.transactions.commit(*txn)
    async with running(app):
        await wait_for(lambda: len(read(app, counted)) == len(keys))
    last: dict[str, int] = {}
    for user, n in read(app, counted):
        last[user] = max(last.get(user, 0), n)
    assert last == dict(Counter(keys))


def other_key_app(url: str, data_dir: Path, partitioner: str) -> tuple[sk.App, sk.Topic]:
    """Each record also counts a key of its value: another key than the record's."""
    app = sk.App(f"other-{partitioner}", broker=url, data_dir=data_dir)
    clicks = app.topic(
        "clicks", key_type=str, value_type=str, partitions=4, partitioner=partitioner
    )
    counts = app.table("counts", value_type=int, default=int)

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> None:
        async for user, also in stream.items():
            counts[user] += 1
            counts[also] += 1

    return app, clicks


async def test_another_key_is_checked_with_the_partitioner_the_guard_names(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks = other_key_app(memory_url, tmp_path, "murmur2")
    # A key crc32 puts in the record's partition but murmur2 does not.
    user = next(k for k in KEYS if crc32_of(k, 4) != partition_for(k.encode(), 4))
    also = next(k for k in KEYS if k != user and crc32_of(k, 4) == crc32_of(user, 4))
    await app.send(clicks, key=user, value=also, partition=crc32_of(user, 4))
    with pytest.raises(sk.AgentError) as failure:
        await Worker(app).run()
    message = str(failure.value)
    assert f"key {also!r} belongs to partition" in message
    assert "by the murmur2 partitioner of topic 'clicks'" in message
    assert "partitioner='crc32'" in message  # the way on, for librdkafka input


async def test_a_crc32_topic_writes_and_checks_keys_as_librdkafka_places_them(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks = other_key_app(memory_url, tmp_path, "crc32")
    # Pairs crc32 puts in one partition: legal writes on a crc32 topic only.
    pairs = [
        (user, also)
        for user in KEYS[:10]
        for also in KEYS
        if also != user and crc32_of(also, 4) == crc32_of(user, 4)
    ]
    for user, also in pairs:
        await app.send(clicks, key=user, value=also)  # placed by the topic's partitioner
    broker = sk.MemoryBroker.for_url(memory_url)
    records = broker.records("clicks")
    assert all(r.partition == crc32_of(r.key.decode(), 4) for r in records)
    ends = Counter(r.partition for r in records)
    async with running(app):
        await wait_for(
            lambda: committed(app, clicks) == {p: ends.get(p) for p in range(4)},
            what="every record committed",
        )
    # Every write was accepted: the worker stopped cleanly (running() raises otherwise).


async def test_a_query_finds_a_key_where_the_topics_partitioner_put_it(
    memory_url: str, tmp_path: Path
) -> None:
    app = sk.App("ask", broker=memory_url, data_dir=tmp_path, web_port=0, web_host="127.0.0.1")
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=4, partitioner="crc32")
    counts = app.table("counts", value_type=int, default=int)

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> None:
        async for user in stream.items():
            counts[user[0]] += 1

    moved = [k for k in KEYS if crc32_of(k, 4) != partition_for(k.encode(), 4)][:5]
    await app.send_many(clicks, [(k, "/") for k in moved])
    ends = Counter(crc32_of(k, 4) for k in moved)
    async with running(app):
        await wait_for(
            lambda: committed(app, clicks) == {p: ends.get(p) for p in range(4)}, what="counted"
        )
        assert [await app.query("counts", k) for k in moved] == [1] * len(moved)


# On Tansu, with confluent-kafka's default producer -----------------------------------


def produce_with_librdkafka(url: str, topic: str, keys: list[str]) -> list[tuple[str, int, int]]:
    """confluent-kafka's default producer (partitioner consistent_random): where each
    record landed, as (key, partition, offset)."""
    from confluent_kafka import Producer

    landed: list[tuple[str, int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        landed.append((msg.key().decode(), msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": url.split("://", 1)[-1]})
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"/", on_delivery=delivered)
    assert producer.flush(30) == 0
    return landed


async def test_a_worker_counts_what_confluent_kafka_produced(
    kafka_url: str, cluster: Any, topic_name: Any
) -> None:
    import asyncio

    from cluster import wait_for_commits
    from counting import APP, PARTITIONS, Counting

    counting = Counting(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))
    await counting.create_topics()
    keys = KEYS * 2
    landed = await asyncio.to_thread(produce_with_librdkafka, kafka_url, counting.input, keys)
    # librdkafka placed each key by CRC32, so most keys are not where murmur2 would be.
    assert all(p == crc32_of(k, PARTITIONS) for k, p, _ in landed)
    assert sum(p != partition_for(k.encode(), PARTITIONS) for k, p, _ in landed) > 20

    worker = cluster.start(APP, "w1", env=counting.env)
    ends = {p: max(o for _, q, o in landed if q == p) + 1 for _, p, _ in landed}
    await wait_for_commits(
        kafka_url, counting.app_id, counting.input, ends, timeout=45, details=cluster.output
    )
    last: dict[str, int] = {}
    for out in await counting.outputs():
        last[out.key] = max(last.get(out.key, 0), out.count)
        assert out.partition == crc32_of(out.key, PARTITIONS)  # counted where it arrived
    assert last == dict(Counter(keys))
    await worker.stop()
