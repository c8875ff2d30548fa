"""End to end on the memory broker: agents, sinks, ordering, commits, shutdown, restart."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import pytest
from helpers import committed, read, running, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit.partitioner import partition_for
from streamkit.runtime.worker import Worker


class Click(BaseModel):
    user: str
    page: str


USERS = [f"user{i}" for i in range(7)]


def click_app(url: str, seen: list[sk.Event] | None = None) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("clicks", broker=url, commit_interval_s=0.05)
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=4)
    views = app.topic("views-per-user", key_type=str, value_type=int, partitions=3)

    @app.agent(clicks, sink=views)
    async def count_views(stream: sk.Stream) -> Any:
        counts: dict[str, int] = {}
        async for event in stream.events():
            if seen is not None:
                seen.append(event)
            counts[event.key] = counts.get(event.key, 0) + 1
            yield event.key, counts[event.key]

    return app, clicks, views


async def send_clicks(app: sk.App, clicks: sk.Topic, n: int, start: int = 0) -> Counter[str]:
    sent: Counter[str] = Counter()
    for i in range(start, start + n):
        user = USERS[i % len(USERS)]
        await app.send(clicks, key=user, value=Click(user=user, page=f"/p{i}"), timestamp_ms=i)
        sent[user] += 1
    return sent


async def test_agent_counts_and_yields_to_sink(memory_url: str) -> None:
    app, clicks, views = click_app(memory_url)
    sent = await send_clicks(app, clicks, 500)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 500, what="500 outputs")
        await wait_for(lambda: committed(app, clicks) == _ends(app, clicks), what="commits")
    final: dict[str, int] = {}
    for user, count in read(app, views):
        final[user] = max(final.get(user, 0), count)
    assert final == dict(sent)
    # Outputs are partitioned by Kafka's partitioner on the key bytes.
    broker = sk.MemoryBroker.for_url(memory_url)
    for record in broker.records("views-per-user"):
        assert record.partition == partition_for(record.key, 3)


def _ends(app: sk.App, topic: sk.Topic) -> dict[int, int | None]:
    broker = sk.MemoryBroker.for_url(app.settings.broker)
    return {
        p: broker.end_offset(sk.transport.TopicPartition(topic.name, p))
        for p in range(topic.partitions)
    }


async def test_partition_order_and_event_fields(memory_url: str) -> None:
    seen: list[sk.Event] = []
    app, clicks, _views = click_app(memory_url, seen)
    await app.send(
        clicks,
        key="ada",
        value=Click(user="ada", page="/"),
        headers=[("h", b"1")],
        timestamp_ms=10**12,
    )
    await send_clicks(app, clicks, 300)
    async with running(app):
        await wait_for(lambda: len(seen) == 301)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for event in seen:
        by_partition[event.partition].append(event.offset)
        assert event.topic == "clicks"
        assert event.partition == partition_for(event.key.encode(), 4)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    first = next(e for e in seen if e.timestamp == 10**12)
    assert first.key == "ada" and first.value == Click(user="ada", page="/")
    assert list(first.headers) == [("h", b"1")]
    # Outputs carry the input's timestamp and headers, as in Kafka Streams.
    out = [
        r
        for r in sk.MemoryBroker.for_url(memory_url).records("views-per-user")
        if r.timestamp == 10**12
    ]
    assert len(out) == 1 and list(out[0].headers) == [("h", b"1")]


async def test_yield_value_keeps_the_input_key(memory_url: str) -> None:
    app = sk.App("keep", broker=memory_url)
    src = app.topic("src", value_type=int, partitions=2)
    out = app.topic("out", value_type=int, partitions=2)

    @app.agent(src, sink=out)
    async def double(stream: sk.Stream) -> Any:
        async for value in stream:
            yield value * 2

    for i in range(10):
        await app.send(src, key=f"k{i}", value=i)
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 10)
    assert sorted(read(app, out)) == sorted((f"k{i}", i * 2) for i in range(10))


async def test_several_sources_lowest_timestamp_first(memory_url: str) -> None:
    seen: list[tuple[str, int]] = []
    app = sk.App("merge", broker=memory_url)
    left = app.topic("left", value_type=int, partitions=1)
    right = app.topic("right", value_type=int, partitions=1)

    @app.agent([left, right])
    async def merged(stream: sk.Stream) -> None:
        async for event in stream.events():
            seen.append((event.topic, event.timestamp))

    for ts in range(0, 100, 2):
        await app.send(left, key="k", value=ts, timestamp_ms=ts)
    for ts in range(1, 100, 2):
        await app.send(right, key="k", value=ts, timestamp_ms=ts)
    async with running(app):
        await wait_for(lambda: len(seen) == 100)
    assert [ts for _, ts in seen] == list(range(100))


async def test_timer_and_send_from_an_agent(memory_url: str) -> None:
    app = sk.App("timers", broker=memory_url)
    ticks = app.topic("ticks", value_type=int)
    echoes = app.topic("echoes", value_type=int)
    sent = 0

    @app.timer(0.01)
    async def tick() -> None:
        nonlocal sent
        if sent < 20:
            await app.send(ticks, key="t", value=sent)
            sent += 1

    @app.agent(ticks)
    async def echo(stream: sk.Stream) -> None:
        async for value in stream:
            await app.send(echoes, key="e", value=value)

    async with running(app):
        await wait_for(lambda: len(read(app, echoes)) == 20)
    assert [v for _, v in read(app, echoes)] == list(range(20))


async def test_graceful_stop_commits_and_restart_processes_each_record_once(
    memory_url: str,
) -> None:
    seen: list[sk.Event] = []
    app, clicks, _views = click_app(memory_url, seen)
    await send_clicks(app, clicks, 200)
    async with running(app):
        await wait_for(lambda: len(seen) == 200)
    assert committed(app, clicks) == _ends(app, clicks)

    # A new process would build the same app again; the memory broker keeps the log.
    seen_again: list[sk.Event] = []
    app2, clicks2, _ = click_app(memory_url, seen_again)
    await send_clicks(app2, clicks2, 100, start=200)
    async with running(app2):
        await wait_for(lambda: len(seen_again) == 100)
        await wait_for(lambda: committed(app2, clicks2) == _ends(app2, clicks2))
    positions = [(e.partition, e.offset) for e in seen + seen_again]
    assert len(positions) == len(set(positions)) == 300


async def test_agent_failure_stops_the_worker_and_names_the_record(memory_url: str) -> None:
    seen: list[int] = []
    app = sk.App("boom", broker=memory_url, commit_interval_s=60)
    numbers = app.topic("numbers", value_type=int, partitions=1)

    @app.agent(numbers)
    async def picky(stream: sk.Stream) -> None:
        async for value in stream:
            if value == 7:
                raise ValueError("seven is not allowed")
            seen.append(value)

    for i in range(20):
        await app.send(numbers, key="k", value=i)
    with pytest.raises(sk.AgentError) as failure:
        await asyncio.wait_for(Worker(app).run(), 10)
    message = str(failure.value)
    assert "agent picky" in message and "numbers[0]@7" in message
    assert "ValueError: seven is not allowed" in message
    assert seen == list(range(7))
    # Everything before the failed record is committed; it is retried on restart.
    assert committed(app, numbers) == {0: 7}


async def test_agent_that_returns_early_is_an_error(memory_url: str) -> None:
    app = sk.App("early", broker=memory_url)
    numbers = app.topic("numbers", value_type=int, partitions=1)

    @app.agent(numbers)
    async def first_only(stream: sk.Stream) -> None:
        async for _ in stream:
            return

    for i in range(3):
        await app.send(numbers, key="k", value=i)
    with pytest.raises(sk.AgentError, match="returned while its stream was still open"):
        await asyncio.wait_for(Worker(app).run(), 10)


async def test_full_queue_pauses_the_partition(memory_url: str) -> None:
    app = sk.App("slow", broker=memory_url, partition_buffer_records=100, max_poll_records=40)
    numbers = app.topic("numbers", value_type=int, partitions=1)
    release = asyncio.Event()
    seen: list[int] = []

    @app.agent(numbers)
    async def slow(stream: sk.Stream) -> None:
        async for value in stream:
            await release.wait()
            seen.append(value)

    broker = sk.MemoryBroker.for_url(memory_url)
    async with running(app) as worker:
        await wait_for(lambda: worker.coordinator is not None and bool(worker.coordinator.tasks))
        for i in range(5000):
            broker.append("numbers", 0, b"k", str(i).encode())
        task = next(iter(worker.coordinator.tasks.values()))  # type: ignore[union-attr]
        await wait_for(lambda: task.buffered_records() >= 40, what="records queued")
        for _ in range(20):  # the fetch loop keeps running while the agent is stuck
            await asyncio.sleep(0.01)
            # Without pausing, all 5,000 would be fetched into the queue at once.
            assert task.buffered_records() < 100 + 40
        release.set()
        await wait_for(lambda: len(seen) == 5000, what="every record after resuming")
    assert seen == list(range(5000))


async def test_app_stop_from_an_agent(memory_url: str) -> None:
    app = sk.App("stopper", broker=memory_url)
    numbers = app.topic("numbers", value_type=int)

    @app.agent(numbers)
    async def stop_at_five(stream: sk.Stream) -> None:
        async for value in stream:
            if value == 5:
                app.stop()

    for i in range(10):
        await app.send(numbers, key="k", value=i)
    await asyncio.wait_for(Worker(app).run(), 10)
    assert committed(app, numbers)[0] is not None


@pytest.mark.parametrize("threshold", [25_000, 0])
async def test_the_gc_young_threshold_holds_while_the_worker_runs(
    memory_url: str, threshold: int
) -> None:
    import gc

    before = gc.get_threshold()
    app = sk.App("gc", broker=memory_url, gc_young_threshold=threshold)
    ticks = app.topic("ticks", key_type=str, value_type=int, partitions=1)
    seen: list[tuple[int, int, int]] = []

    @app.agent(ticks)
    async def watch(stream: sk.Stream) -> None:
        async for _ in stream:
            seen.append(gc.get_threshold())

    await app.send(ticks, key="k", value=1)
    async with running(app):
        await wait_for(lambda: len(seen) == 1)
    expected = (threshold, *before[1:]) if threshold else before
    assert seen == [expected]
    assert gc.get_threshold() == before  # the interpreter's own setting is back


async def test_send_many_outside_and_inside_a_worker(memory_url: str) -> None:
    app = sk.App("bulk", broker=memory_url)
    orders = app.topic("orders", key_type=str, value_type=int, partitions=2)
    doubled = app.topic("doubled", key_type=str, value_type=int, partitions=2)
    records = [(f"k{i % 5}", i, 1_000 + i) for i in range(300)]
    await app.send_many(orders, records)
    broker = sk.MemoryBroker.for_url(memory_url)
    stored = broker.records("orders")
    assert sorted((orders.decode(r), r.timestamp) for r in stored) == sorted(
        ((k, v), ts) for k, v, ts in records
    )
    for key in {k for k, _, _ in records}:  # one key, one partition, in order
        mine = [orders.decode(r)[1] for r in stored if r.key == key.encode()]
        assert mine == [v for k, v, _ in records if k == key]

    @app.agent(orders)
    async def double(stream: sk.Stream) -> None:
        async for event in stream.events():
            await app.send_many(doubled, [(event.key, 2 * event.value)])

    async with running(app):
        await wait_for(lambda: len(read(app, doubled)) == 300)
    assert sorted(v for _, v in read(app, doubled)) == sorted(2 * v for _, v, _ in records)
    with pytest.raises(sk.ConfigError, match="unknown topic 'nope'"):
        await app.send_many("nope", [("k", 1)])


async def test_a_task_whose_commit_was_refused_resumes_from_its_own_positions(
    memory_url: str,
) -> None:
    """The member's session times out with work processed but not committed; it rejoins
    and gets its partitions back. Its revoke-time commit was refused, yet its outputs
    and state are acknowledged: it goes on from where it got to, instead of from the
    committed offsets, and no click is counted twice."""
    app, clicks, views = click_app(memory_url)
    app.configure(commit_interval_s=3600)  # no commit but the one the revoke attempts
    sent = await send_clicks(app, clicks, 70)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 70, what="70 outputs")
        assert set(committed(app, clicks).values()) == {None}
        sk.MemoryBroker.for_url(memory_url).expire_member("clicks", rejoins=True)
        await wait_for(
            lambda: sk.MemoryBroker.for_url(memory_url).member_count("clicks") == 1,
            what="the member back in its group",
        )
        sent += await send_clicks(app, clicks, 14, start=70)
        await wait_for(lambda: len(read(app, views)) >= 84, what="the next 14 outputs")
    outputs = read(app, views)
    assert len(outputs) == 84  # each click once: nothing redone from the committed offsets
    final: dict[str, int] = {}
    for user, count in outputs:
        final[user] = max(final.get(user, 0), count)
    assert final == dict(sent)
