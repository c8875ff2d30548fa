"""The kafka:// transport against a real broker process (Tansu unless
STREAMKIT_TEST_BROKER points elsewhere): the same contract the memory transport
keeps, checked without mocks.

Each new consumer group costs a join that Tansu holds for half the session
timeout, so the tests use a 6 s session timeout and as few groups as they can.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from streamkit.devbroker import free_port
from streamkit.errors import ConfigError, TransportError
from streamkit.transport import TopicPartition, TopicSpec, transport_for
from streamkit.transport.base import PartitionReader, RawRecord
from streamkit.transport.kafka import KafkaConsumer, KafkaTransport, parse_kafka_url

OPTIONS: dict[str, Any] = {"session_timeout_ms": 6000}
DEADLINE_S = 20.0


class Listener:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.events: list[tuple[str, set[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append(("revoked", revoked))
        self.assigned -= revoked

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append(("assigned", assigned))
        self.assigned |= assigned


async def collect(
    consumer: KafkaConsumer,
    until: Callable[[Mapping[TopicPartition, Sequence[RawRecord]]], bool],
    *,
    max_records: int = 5000,
    on_batch: Callable[[Mapping[TopicPartition, Sequence[RawRecord]]], None] | None = None,
    deadline_s: float = DEADLINE_S,
) -> dict[TopicPartition, list[RawRecord]]:
    """getmany until `until(everything so far)` holds; fail at the deadline."""
    got: dict[TopicPartition, list[RawRecord]] = defaultdict(list)
    deadline = time.monotonic() + deadline_s
    while not until(got):
        assert time.monotonic() < deadline, (
            f"condition not met within {deadline_s} s; got "
            f"{ {tp: len(r) for tp, r in got.items()} }"
        )
        fetched = await consumer.getmany(0.5, max_records)
        for tp, records in fetched.items():
            assert isinstance(tp, TopicPartition)
            got[tp].extend(records)
        if on_batch is not None:
            on_batch(fetched)
    return dict(got)


def counts(got: Mapping[TopicPartition, Sequence[RawRecord]]) -> dict[int, int]:
    return {tp.partition: len(records) for tp, records in got.items()}


def kafka(url: str, **options: Any) -> KafkaTransport:
    return KafkaTransport(url, **{**OPTIONS, **options})


# no broker needed ---------------------------------------------------------------------


def test_url_and_options_are_checked_up_front() -> None:
    assert parse_kafka_url("kafka://a:1,b:2") == ["a:1", "b:2"]
    assert parse_kafka_url("kafka://localhost") == ["localhost:9092"]
    assert isinstance(transport_for("kafka://localhost:9092"), KafkaTransport)
    with pytest.raises(ConfigError, match="names no host"):
        KafkaTransport("kafka://")
    with pytest.raises(ConfigError, match="not host:port"):
        KafkaTransport("kafka://host:notaport")
    with pytest.raises(ConfigError, match="unknown kafka client option"):
        KafkaTransport("kafka://h:1", sesion_timeout_ms=6000)
    with pytest.raises(ConfigError, match="SASL_SSL or SASL_PLAINTEXT"):
        KafkaTransport("kafka://h:1", username="u", password="p")
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        KafkaTransport(
            "kafka://h:1", security_protocol="SASL_SSL", sasl_mechanism="GSSAPI",
            username="u", password="p",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        KafkaTransport("kafka://h:1", session_timeout_ms=3000, heartbeat_interval_ms=3000)
    scram = KafkaTransport(
        "kafka://h:1", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        username="u", password="p",
    )  # fmt: skip
    common = scram.options.common()
    assert common["sasl_plain_username"] == "u"
    assert common["ssl_context"] is not None
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        KafkaTransport("kafka://h:1", security_protocol="SSL", cafile="/nonexistent/ca.pem")


async def test_unreachable_broker_fails_fast_naming_the_url() -> None:
    url = f"kafka://127.0.0.1:{free_port()}"
    transport = kafka(url, request_timeout_ms=3000)
    started = time.monotonic()
    with pytest.raises(TransportError, match=url.replace(".", r"\.")) as producer_error:
        await transport.producer().start()
    assert "producer" in str(producer_error.value)
    with pytest.raises(TransportError, match="consumer of group 'g'"):
        await transport.consumer("g").start(["t"], Listener())
    with pytest.raises(TransportError, match="connecting partition reader"):
        await transport.reader().start()
    admin = transport.admin()
    with pytest.raises(TransportError, match="admin client"):
        await admin.partition_counts(["t"])
    await admin.close()
    assert time.monotonic() - started < 10


# admin ------------------------------------------------------------------------------


async def test_admin_creates_topics_and_reports_partition_counts(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    admin = kafka(kafka_url).admin()
    one, four, missing = topic_name("one"), topic_name("four"), topic_name("missing")
    try:
        assert await admin.partition_counts([one, four, missing]) == {}
        await admin.create_topics(
            [
                TopicSpec(one, 1),
                TopicSpec(four, 4, config={"cleanup.policy": "compact"}),
            ]
        )
        assert await admin.partition_counts([one, four, missing]) == {one: 1, four: 4}
        # Creating what exists is fine: several workers start at once.
        await admin.create_topics([TopicSpec(four, 4)])
        # Asking about a topic must not create it (Tansu auto-creates on metadata).
        assert await admin.partition_counts([missing]) == {}
        assert await admin.partition_counts([]) == {}
    finally:
        await admin.close()


# producer and consumer ----------------------------------------------------------------


async def test_every_record_arrives_in_offset_order_with_its_fields(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    # Small batches so that each partition fills several and the full-batch path runs.
    transport = kafka(kafka_url, max_batch_size=16_384, linger_ms=2)
    topic = topic_name("records")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 4)])
    await admin.close()

    per_partition = 1500
    sent: dict[int, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]]] = {
        p: [] for p in range(4)
    }
    producer = transport.producer()
    await producer.start()
    base_ts = int(time.time() * 1000) - 1_000_000
    for i in range(per_partition * 4):
        p = i % 4
        key = None if i % 97 == 0 else f"key-{i}".encode()
        value = None if i % 89 == 0 else f"value-{i}-".encode() * 5
        headers = [("n", str(i).encode()), ("kind", b"test")] if i % 3 else []
        timestamp = base_ts + i
        producer.send(topic, p, key, value, tuple(headers) if i % 2 else headers, timestamp)
        sent[p].append((key, value, headers, timestamp))
        if i == 3000:
            await producer.flush()  # a flush in the middle: later records still in order
    await producer.flush()

    consumer = transport.consumer(topic_name("group"))
    listener = Listener()
    await consumer.start([topic], listener)
    try:
        got = await collect(consumer, lambda g: sum(map(len, g.values())) >= 4 * per_partition)
        assert listener.assigned == {TopicPartition(topic, p) for p in range(4)}
        assert all(type(tp) is TopicPartition for tp in listener.assigned)
        assert counts(got) == {p: per_partition for p in range(4)}
        for tp, records in got.items():
            assert [r.offset for r in records] == list(range(per_partition))
            for record, (key, value, headers, timestamp) in zip(
                records, sent[tp.partition], strict=True
            ):
                assert (record.topic, record.partition) == tp
                assert record.key == key
                assert record.value == value
                assert list(record.headers) == headers
                assert record.timestamp == timestamp

        # Without a flush, the linger timer sends what waits in open batches.
        for p in range(4):
            producer.send(topic, p, b"late", b"lingered", (), base_ts)
        late = await collect(consumer, lambda g: sum(map(len, g.values())) >= 4)
        assert counts(late) == {p: 1 for p in range(4)}
        assert {r.offset for records in late.values() for r in records} == {per_partition}
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_new_member_resumes_from_committed_offsets(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    transport = kafka(kafka_url)
    topic, group = topic_name("commits"), topic_name("group")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 2)])
    await admin.close()
    producer = transport.producer()
    await producer.start()
    for i in range(200):
        producer.send(topic, i % 2, None, str(i).encode(), (), 1000 + i)
    await producer.flush()

    first = transport.consumer(group)
    await first.start([topic], Listener())
    try:
        await collect(first, lambda g: sum(map(len, g.values())) >= 200)
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        assert await first.committed(tp0) is None
        await first.commit({tp0: 40, tp1: 75})
        assert await first.committed(tp0) == 40
        assert await first.committed(tp1) == 75
    finally:
        await first.stop()

    # The first member left on stop (on Tansu too, whose first generation is 0), so
    # the next one joins at once instead of waiting for the 6 s session to expire.
    second = transport.consumer(group)
    await second.start([topic], Listener())
    try:
        got = await collect(second, lambda g: sum(map(len, g.values())) >= 60 + 25, deadline_s=5.5)
        assert [r.offset for r in got[tp0]] == list(range(40, 100))
        assert [r.offset for r in got[tp1]] == list(range(75, 100))
        assert await second.committed(tp1) == 75
    finally:
        await second.stop()
        await producer.stop()


async def test_pause_holds_back_a_partition_and_resume_continues_without_gaps(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    transport = kafka(kafka_url)
    topic = topic_name("pause")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 2)])
    await admin.close()
    producer = transport.producer()
    await producer.start()
    n = 3000
    for i in range(2 * n):
        producer.send(topic, i % 2, None, b"x" * 50, (), 1000)
    await producer.flush()

    consumer = transport.consumer(topic_name("group"))
    await consumer.start([topic], Listener())
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    try:
        # Pause partition 0 as soon as some of its records came in, as a full task queue does.
        before = await collect(consumer, lambda g: len(g.get(tp0, ())) > 0, max_records=50)
        consumer.pause(tp0)
        seen0 = len(before[tp0])
        assert seen0 < n

        def no_paused_records(fetched: Mapping[TopicPartition, Sequence[RawRecord]]) -> None:
            assert tp0 not in fetched, "records of a paused partition were returned"

        paused = await collect(
            consumer,
            lambda g: len(before.get(tp1, ())) + len(g.get(tp1, ())) >= n,
            on_batch=no_paused_records,
        )
        # Records keep coming for partition 1 while partition 0 stays paused.
        producer.send(topic, 1, None, b"more", (), 1000)
        await producer.flush()
        await collect(consumer, lambda g: len(g.get(tp1, ())) >= 1, on_batch=no_paused_records)
        assert tp0 not in paused

        consumer.resume(tp0)
        after = await collect(consumer, lambda g: seen0 + len(g.get(tp0, ())) >= n)
        offsets = [r.offset for r in before[tp0]] + [r.offset for r in after[tp0]]
        assert offsets == list(range(n))
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_failing_rebalance_listener_surfaces_from_getmany(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    class Failing(Listener):
        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            raise RuntimeError("restore failed")

    transport = kafka(kafka_url)
    topic = topic_name("listener")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 1)])
    await admin.close()
    consumer = transport.consumer(topic_name("group"))
    await consumer.start([topic], Failing())
    try:
        with pytest.raises(RuntimeError, match="restore failed"):
            await collect(consumer, lambda g: False)
    finally:
        await consumer.stop()


async def test_flush_names_the_partition_that_failed(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    transport = kafka(kafka_url, request_timeout_ms=5000)
    topic = topic_name("bad")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 4)])
    await admin.close()
    producer = transport.producer()
    await producer.start()
    try:
        producer.send(topic, 1, None, b"fine", (), 1000)
        producer.send(topic, 9, None, b"nowhere", (), 1000)
        started = time.monotonic()
        with pytest.raises(TransportError, match=rf"{topic}\[9\].*no partition 9") as error:
            await producer.flush()
        assert kafka_url in str(error.value)
        assert time.monotonic() - started < 5
        # A lost record stays reported: no later flush may let a task commit past it.
        producer.send(topic, 2, None, b"after", (), 1000)
        with pytest.raises(TransportError, match=rf"{topic}\[9\]"):
            await producer.flush()
        counts_ = await asyncio.wait_for(_end_offsets(transport, topic), DEADLINE_S)
        assert counts_[1] >= 1 and counts_[2] >= 1
    finally:
        await producer.stop()


async def test_a_flush_waits_for_batches_another_flush_sealed(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    # Two tasks share the producer: the second to flush must not return before the
    # first one's records are acknowledged, or it could commit past unacked outputs.
    transport = kafka(kafka_url)
    topic = topic_name("shared")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 1)])
    await admin.close()
    producer = transport.producer()
    await producer.start()
    try:
        for _ in range(5_000):
            producer.send(topic, 0, None, b"x" * 60, (), 1000)
        first = asyncio.create_task(producer.flush())
        await asyncio.sleep(0)  # the first flush seals the batches and starts waiting
        second = await producer.flush()
        assert second[TopicPartition(topic, 0)] == 5_000
        assert (await first)[TopicPartition(topic, 0)] == 5_000
    finally:
        await producer.stop()


async def _end_offsets(transport: KafkaTransport, topic: str) -> dict[int, int]:
    # Without a group: the raw consumer can read the high watermarks directly.
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=transport.servers)
    await consumer.start()
    try:
        tps = [KafkaTopicPartition(topic, p) for p in range(4)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


# flush offsets and the partition reader ---------------------------------------------------


async def read_to_end(
    reader: PartitionReader,
    tps: Sequence[TopicPartition],
    *,
    max_records: int,
    deadline_s: float = DEADLINE_S,
) -> dict[TopicPartition, list[RawRecord]]:
    """Read as a restore does: until every partition's position reaches its end."""
    ends = {tp: (await reader.offsets(tp))[1] for tp in tps}
    got: dict[TopicPartition, list[RawRecord]] = {tp: [] for tp in tps}
    deadline = time.monotonic() + deadline_s
    while any(reader.position(tp) < end for tp, end in ends.items()):
        assert time.monotonic() < deadline, (
            f"not caught up within {deadline_s} s: positions "
            f"{ {tp.partition: reader.position(tp) for tp in tps} }, ends "
            f"{ {tp.partition: end for tp, end in ends.items()} }"
        )
        for tp, records in (await reader.getmany(0.5, max_records)).items():
            assert tp in got, f"records of {tp}, which is not assigned"
            got[tp].extend(records)
    return got


async def test_flush_returns_each_partitions_offset_after_its_last_acknowledged_record(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    # Small batches, so that one flush acknowledges several batches per partition.
    transport = kafka(kafka_url, max_batch_size=4096)
    topic = topic_name("acked")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 3)])
    await admin.close()
    tp0, tp2 = TopicPartition(topic, 0), TopicPartition(topic, 2)
    producer = transport.producer()
    await producer.start()
    reader = transport.reader()
    await reader.start()
    try:
        assert await producer.flush() == {}
        sent = {tp0: 0, tp2: 0}
        results = []
        # Partition 1 is never written; the third round writes partition 0 only.
        for round_sizes in ({tp0: 1, tp2: 1}, {tp0: 700, tp2: 3}, {tp0: 5}, {tp0: 900, tp2: 1200}):
            for tp, n in round_sizes.items():
                for i in range(n):
                    producer.send(topic, tp.partition, None, b"v%d" % i, (), 1000)
                sent[tp] += n
            acked = await producer.flush()
            assert acked == sent
            assert all(type(tp) is TopicPartition for tp in acked)
            results.append((acked, dict(sent)))
        # Each result stays what it was when flush returned.
        assert all(acked == expected for acked, expected in results)
        for tp, n in sent.items():
            assert await reader.offsets(tp) == (0, n)
    finally:
        await reader.stop()
        await producer.stop()


async def test_a_reader_gets_every_record_up_to_the_true_end_of_a_partition(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    # Many full 64 KB batches and a partial last one. Tansu's ListOffsets gives the
    # first offset of the last batch + 1 as the end: a restore that trusted it would
    # stop short of the rest of that batch.
    transport = kafka(kafka_url)
    topic = topic_name("restore")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 2)])
    await admin.close()
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    n, n1 = 20_000, 30
    producer = transport.producer()
    await producer.start()
    for i in range(n):
        producer.send(topic, 0, b"k%d" % (i % 100), b"%068d" % i, (), 1000 + i)
    for i in range(n1):
        producer.send(topic, 1, None, b"p1-%d" % i, (), 1000)
    assert await producer.flush() == {tp0: n, tp1: n1}
    await producer.stop()

    reader = transport.reader()
    await reader.start()
    try:
        from aiokafka import TopicPartition as KafkaTopicPartition

        listed = (await reader.raw.end_offsets([KafkaTopicPartition(topic, 0)])).popitem()[1]
        assert listed <= n  # Kafka: n; Tansu: less
        reader.assign({tp0: 0})
        assert reader.position(tp0) == 0
        assert await reader.offsets(tp0) == (0, n)
        got = (await read_to_end(reader, [tp0], max_records=500))[tp0]
        assert [r.offset for r in got] == list(range(n))
        assert [r.value for r in got] == [b"%068d" % i for i in range(n)]
        assert got[-1].timestamp == 1000 + n - 1
        assert reader.position(tp0) == n
        assert await reader.getmany(0.1, 500) == {}

        # From the middle, in the middle of a batch: exactly the tail.
        reader.assign({tp0: 12_345})
        tail = (await read_to_end(reader, [tp0], max_records=5000))[tp0]
        assert [r.offset for r in tail] == list(range(12_345, n))

        # A new assignment replaces the old one: nothing more from partition 0.
        reader.assign({tp1: 2})
        with pytest.raises(TransportError, match=rf"{topic}\[0\] is not assigned"):
            reader.position(tp0)
        other = (await read_to_end(reader, [tp1], max_records=5000))[tp1]
        assert [r.offset for r in other] == list(range(2, n1))
        assert [r.value for r in other] == [b"p1-%d" % i for i in range(2, n1)]
        assert await reader.getmany(0.1, 500) == {}
    finally:
        await reader.stop()


async def test_an_empty_partition_is_caught_up_at_once(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    transport = kafka(kafka_url)
    topic = topic_name("empty")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 1)])
    await admin.close()
    tp = TopicPartition(topic, 0)
    reader = transport.reader()
    with pytest.raises(TransportError, match="partition reader is not started"):
        await reader.offsets(tp)
    # Assigned before start: applied when it starts.
    reader.assign({tp: 0})
    await reader.start()
    try:
        assert await reader.offsets(tp) == (0, 0)
        assert reader.position(tp) == 0
        assert await read_to_end(reader, [tp], max_records=100) == {tp: []}
        assert await reader.getmany(0.1, 100) == {}
        assert reader.position(tp) == 0
    finally:
        await reader.stop()


async def test_app_send_many_delivers_every_record_in_key_order(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    import streamkit as sk

    app = sk.App("send-many", broker=kafka_url, kafka_options=OPTIONS)
    topic = app.topic(topic_name("orders"), key_type=str, value_type=int, partitions=3)
    records = [(f"user-{i % 7}", i) for i in range(5000)]
    await app.send_many(topic, records)
    consumer = kafka(kafka_url).consumer(topic_name("reader"))
    await consumer.start([topic.name], Listener())
    try:
        got = await collect(consumer, lambda g: sum(map(len, g.values())) >= 5000)
    finally:
        await consumer.stop()
    assert sum(map(len, got.values())) == 5000
    by_key: dict[str, list[int]] = defaultdict(list)
    for tp, rows in got.items():
        for r in rows:
            key, value = topic.decode(r)
            assert tp.partition == sk.partitioner.partition_for(r.key, 3)
            by_key[key].append(value)
    assert by_key == {k: [v for kk, v in records if kk == k] for k in {k for k, _ in records}}


async def test_a_member_is_quiet_only_once_a_fresh_answer_shows_nothing_waiting(
    kafka_url: str,
    topic_name: Callable[[str], str],
) -> None:
    """What idle windows rely on: records waiting on the broker, or a paused partition,
    are input late in coming; quiet time counts from the answer that shows none."""
    transport = kafka(kafka_url)
    topic = topic_name("quiet")
    admin = transport.admin()
    await admin.create_topics([TopicSpec(topic, 1)])
    await admin.close()
    tp = TopicPartition(topic, 0)
    producer = transport.producer()
    await producer.start()
    for _ in range(100):
        producer.send(topic, 0, None, b"x", (), 1000)
    await producer.flush()
    consumer = transport.consumer(topic_name("group"))
    await consumer.start([topic], Listener())
    try:
        assert consumer.quiet_for(tp) == 0  # nothing fetched yet: nothing known
        await collect(consumer, lambda g: len(g.get(tp, ())) >= 100)
        await collect(consumer, lambda _: consumer.quiet_for(tp) > 0)
        consumer.pause(tp)
        producer.send(topic, 0, None, b"late", (), 1000)
        await producer.flush()
        # The paused partition's answers go stale; then it is not quiet any more.
        await collect(consumer, lambda _: consumer.quiet_for(tp) == 0)
        consumer.resume(tp)
        got = await collect(consumer, lambda g: len(g.get(tp, ())) >= 1)
        assert [r.value for r in got[tp]] == [b"late"]
        await collect(consumer, lambda _: consumer.quiet_for(tp) > 0)
    finally:
        await consumer.stop()
        await producer.stop()
