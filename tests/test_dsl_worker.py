"""The DSL in a real (memory-broker) worker: mixed with agents, restored after a restart,
punctuated by the wall clock without input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from helpers import read, running, wait_for

import streamkit as sk


def mixed_app(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("mixed", broker=url, data_dir=data_dir, commit_interval_s=0.05)
    words = app.topic("words", key_type=str, value_type=str, partitions=3)
    echoed = app.topic("echoed", key_type=str, value_type=str, partitions=3)
    counted = app.topic("counted", key_type=str, value_type=int, partitions=3)

    @app.agent(words, sink=echoed)
    async def echo(stream: sk.Stream) -> Any:
        async for word in stream:
            yield word.upper()

    app.stream(words).group_by_key().count(name="word-counts").to_stream().to(counted)
    return app, words, echoed, counted


async def test_agents_and_dsl_read_one_topic_in_one_subtopology(
    memory_url: str, tmp_path: Path
) -> None:
    app, words, echoed, counted = mixed_app(memory_url, tmp_path)
    sub = app.topology().subtopologies[0]
    assert [a.name for a in sub.agents] == ["echo"] and len(sub.graphs) == 1
    assert "Processor: echo (agent" in app.topology().describe()
    assert "KSTREAM-AGGREGATE" in app.topology().describe()
    sent = [f"w{i % 7}" for i in range(60)]
    async with running(app):
        for word in sent:
            await app.send(words, key=word, value=word)
        await wait_for(lambda: len(read(app, counted)) == len(sent), what="all counts")
    assert sorted(v for _, v in read(app, echoed)) == sorted(w.upper() for w in sent)
    final: dict[str, int] = {}
    for key, n in read(app, counted):
        final[key] = max(final.get(key, 0), n)
    assert final == dict(Counter(sent))


def remove_state_files(data_dir: Path, store: str) -> None:
    for path in data_dir.glob(f"mixed/*/{store}.sqlite*"):
        path.unlink()


async def test_dsl_counts_continue_from_restored_state(memory_url: str, tmp_path: Path) -> None:
    app, words, _, counted = mixed_app(memory_url, tmp_path)
    async with running(app):
        for _ in range(5):
            await app.send(words, key="a", value="a")
        await wait_for(lambda: ("a", 5) in read(app, counted), what="first count")
    # A new worker (fresh process state, same files and broker) picks up where it was.
    app2, words2, _, counted2 = mixed_app(memory_url, tmp_path)
    async with running(app2):
        await app2.send(words2, key="a", value="a")
        await wait_for(lambda: ("a", 6) in read(app2, counted2), what="count after restart")
    # And from the changelog alone when the state files are gone.
    remove_state_files(tmp_path, "word-counts")
    app3, words3, _, counted3 = mixed_app(memory_url, tmp_path)
    async with running(app3):
        await app3.send(words3, key="a", value="a")
        await wait_for(lambda: ("a", 7) in read(app3, counted3), what="count after replay")


class Heartbeat(sk.Processor):
    def init(self, context: sk.ProcessorContext) -> None:
        super().init(context)
        context.schedule(0.05, sk.WALL_CLOCK, self.beat)

    def process(self, record: sk.Record) -> None:
        self.context.forward(record)

    def beat(self, now_ms: int) -> None:
        self.context.forward(sk.Record(self.context.task_id, "beat", now_ms))


async def test_wall_clock_punctuation_fires_in_a_worker_without_input(
    memory_url: str, tmp_path: Path
) -> None:
    app = sk.App("beats", broker=memory_url, data_dir=tmp_path)
    source = app.topic("in", key_type=str, value_type=str, partitions=2)
    out = app.topic("beats", key_type=str, value_type=str, partitions=1)
    app.stream(source).process(Heartbeat).to(out)
    async with running(app):
        await wait_for(
            lambda: {k for k, _ in read(app, out)} == {"0_0", "0_1"} and len(read(app, out)) >= 6,
            what="beats from both tasks with no input at all",
        )


async def test_a_table_update_and_a_later_stream_record_in_one_batch_join_in_time_order(
    memory_url: str, tmp_path: Path
) -> None:
    """The table's source and the join share the table's store, so they run as one
    graph and see the batch in timestamp order (the table row, ts 0, comes first)."""
    app = sk.App("batchjoin", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.05)
    clicks = app.topic("clicks", key_type=str, value_type=int, partitions=2)
    names = app.topic("names", key_type=str, value_type=str, partitions=2)
    out = app.topic("out", key_type=str, value_type=str, partitions=2)
    app.stream(clicks).join(app.ktable(names), lambda n, name: f"{name}:{n}").to(out)
    assert len(app.topology().subtopologies[0].graphs) == 1
    await app.send_many(names, [("a", "alice", 0), ("b", "bob", 0)])
    await app.send_many(clicks, [("a", 1, 5), ("b", 2, 6)])
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 2, what="both joined")
    assert sorted(read(app, out)) == [("a", "alice:1"), ("b", "bob:2")]


async def test_an_agent_before_a_windowed_count_in_one_batch_leaves_no_record_late(
    memory_url: str, tmp_path: Path
) -> None:
    """An agent and a DSL window share a task and its stream time. The agent takes
    the batch first; the window must still see time move record by record, so a
    batch spanning more than the grace drops nothing."""
    app = sk.App("agentwin", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.05)
    clicks = app.topic("clicks", key_type=str, value_type=int, partitions=1)
    echoed = app.topic("echoed", key_type=str, value_type=int, partitions=1)
    counted = app.topic("counted", key_type=str, value_type=int, partitions=1)

    @app.agent(clicks, sink=echoed)
    async def echo(stream: sk.Stream) -> Any:
        async for value in stream:
            yield value

    (
        app.stream(clicks)
        .group_by_key()
        .windowed_by(sk.TimeWindows.of(1, grace=1))
        .count(name="per-second")
        .to_stream()
        .map(lambda w, n: (f"{w.key}@{w.start_ms}", n))
        .to(counted)
    )
    # Ten seconds of clicks in one batch: the first ones are 9 s behind the last.
    await app.send_many(clicks, [("a", i, i * 100) for i in range(100)])
    async with running(app):
        await wait_for(lambda: len(read(app, echoed)) == 100, what="all echoed")
        await wait_for(lambda: len(read(app, counted)) == 100, what="all counted")
    final: dict[str, int] = {}
    for window, n in read(app, counted):
        final[window] = n
    assert final == {f"a@{s * 1000}": 10 for s in range(10)}
