"""Exactly-once end to end on memory://, the broker that hides aborted records.

A worker is frozen mid-transaction (or between the broker's commit and its SQLite
write), its group session expires, and a second worker takes its tasks over: the
new owner's InitProducerId fences the first and aborts its open transactions. The
outputs a `read_committed` consumer sees then hold every input exactly once, and
the tables equal the truth, for a passthrough, a counting table, a windowed DSL
count and a stream-table join. When the frozen worker wakes up, its tasks find
themselves fenced, close, and write nothing more, while the worker keeps running.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import table_in_files, wait_for

import streamkit as sk
from streamkit.errors import TransactionAborted
from streamkit.runtime.task import TaskState
from streamkit.runtime.worker import Worker
from streamkit.transport.base import TopicPartition
from streamkit.transport.memory import MemoryTransactionalProducer

USERS = [f"user{i}" for i in range(5)]  # both partitions
PARTITIONS = 2


def eos_app(url: str, data_dir: Path) -> sk.App:
    app = sk.App("eos", broker=url, data_dir=data_dir, processing_guarantee="exactly_once")
    clicks = app.topic("clicks", key_type=str, value_type=int, partitions=PARTITIONS)
    profiles = app.topic("profiles", key_type=str, value_type=str, partitions=PARTITIONS)
    echoed = app.topic("echoed", key_type=str, value_type=int, partitions=PARTITIONS)
    counted = app.topic("counted", key_type=str, value_type=int, partitions=PARTITIONS)
    windowed = app.topic("windowed", key_type=str, value_type=int, partitions=PARTITIONS)
    joined = app.topic("joined", key_type=str, value_type=str, partitions=PARTITIONS)
    counts = app.table("counts", key_type=str, value_type=int, default=int)

    @app.agent(clicks, sink=echoed)
    async def echo(stream: sk.Stream) -> Any:
        async for value in stream:
            yield value

    @app.agent(clicks, sink=counted)
    async def count(stream: sk.Stream) -> Any:
        async for user, _ in stream.items():
            counts[user] += 1
            yield user, counts[user]

    (
        app.stream(clicks)
        .group_by_key()
        .windowed_by(sk.TimeWindows.of(10, grace=60))
        .count(name="per-10s")
        .to_stream()
        .map(lambda w, n: (f"{w.key}@{w.start_ms}", n))
        .to(windowed)
    )
    app.stream(clicks).join(app.ktable(profiles), lambda n, name: f"{name}:{n}").to(joined)
    return app


async def send_clicks(app: sk.App, first: int, last: int) -> None:
    # 100 ms apart: windows of 10 s hold a hundred clicks each, all within the grace.
    # Profiles come first (timestamp 0): the join sees them (lowest timestamp first).
    await app.send_many("clicks", [(USERS[i % 5], i, 1 + i * 100) for i in range(first, last)])


def committed_view(url: str, topic: str) -> list[sk.transport.RawRecord]:
    return list(sk.MemoryBroker.for_url(url).records(topic, read_committed=True))


def decoded(app: sk.App, url: str, topic: str) -> list[tuple[Any, Any]]:
    return [app.topics[topic].decode(r) for r in committed_view(url, topic)]


def all_committed(app: sk.App, url: str) -> bool:
    broker = sk.MemoryBroker.for_url(url)
    return all(
        (broker.committed(app.id, tp) or 0) == broker.end_offset(tp)
        for tp in (TopicPartition("clicks", p) for p in range(PARTITIONS))
    )


def freeze_commits(worker: Worker, *, after_broker_commit: bool) -> tuple[asyncio.Event, set[str]]:
    """Hold every task's next commit, before its transaction commits or just after
    (before SQLite hears of it): a process frozen at that instant. Also the ids of
    the tasks whose commit is being held so far."""
    gate = asyncio.Event()
    holding: set[str] = set()
    assert worker.coordinator is not None
    for task in worker.coordinator.tasks.values():
        producer = task.producer
        assert producer is not None
        commit = producer.commit

        async def held(
            offsets: Mapping[TopicPartition, int],
            group_id: str,
            commit: Callable[..., Awaitable[Mapping[TopicPartition, int]]] = commit,
            task_id: str = str(task.id),
        ) -> Mapping[TopicPartition, int]:
            if not after_broker_commit:
                holding.add(task_id)
                await gate.wait()
            acked = await commit(offsets, group_id)
            if after_broker_commit:
                holding.add(task_id)
                await gate.wait()
            return acked

        producer.commit = held  # type: ignore[method-assign]
    return gate, holding


@dataclass
class Frozen:
    """A worker whose commits are held; setting `gate` lets them go on."""

    app: sk.App
    worker: Worker
    job: asyncio.Task[None]
    gate: asyncio.Event


async def frozen_worker(
    url: str, data_dir: Path, committed: int, processed: int, *, after_broker_commit: bool = False
) -> Frozen:
    """A worker that committed the first `committed` clicks, then processed the rest up
    to `processed` with its commits held (before the broker's commit, or just after)."""
    app = eos_app(url, data_dir)
    await app.send_many("profiles", [(u, f"name-{u}", 0) for u in USERS])
    await send_clicks(app, 0, committed)
    worker = Worker(app)
    job = asyncio.create_task(worker.run())
    await wait_for(lambda: all_committed(app, url), what=f"first {committed} committed")
    gate, holding = freeze_commits(worker, after_broker_commit=after_broker_commit)
    await send_clicks(app, committed, processed)
    broker = sk.MemoryBroker.for_url(url)
    await wait_for(lambda: len(broker.records("echoed")) >= processed, what="all processed")
    assert worker.coordinator is not None
    tasks = len(worker.coordinator.tasks)
    await wait_for(lambda: len(holding) == tasks, what="every task's commit held")
    return Frozen(app, worker, job, gate)


def records_in_hand(worker: Worker) -> int:
    """Records a worker's tasks took from their queues (processed, or in hand), and
    those fetched into the queues."""
    assert worker.coordinator is not None
    tasks = worker.coordinator.tasks.values()
    return sum(p for t in tasks for _, p, _ in t.progress()) + sum(
        t.buffered_records() for t in tasks
    )


def check_exactly_once(app: sk.App, url: str, n: int) -> None:
    """Every input once in every output, as a read_committed consumer sees them."""
    inputs = [(USERS[i % 5], i) for i in range(n)]
    assert sorted(decoded(app, url, "echoed")) == sorted(inputs)
    per_user: defaultdict[str, list[int]] = defaultdict(list)
    for user, count in decoded(app, url, "counted"):
        per_user[user].append(count)
    truth = Counter(user for user, _ in inputs)
    assert {u: c for u, c in per_user.items()} == {u: list(range(1, truth[u] + 1)) for u in truth}
    per_window: defaultdict[str, list[int]] = defaultdict(list)
    for window, count in decoded(app, url, "windowed"):
        per_window[window].append(count)
    window_truth = Counter(f"{user}@{(1 + i * 100) // 10_000 * 10_000}" for user, i in inputs)
    assert {w: c for w, c in per_window.items()} == {
        w: list(range(1, k + 1)) for w, k in window_truth.items()
    }
    assert sorted(decoded(app, url, "joined")) == sorted(
        (user, f"name-{user}:{i}") for user, i in inputs
    )


@pytest.mark.parametrize(
    ("after_broker_commit", "same_files"),
    [(False, True), (False, False), (True, True)],
    ids=["mid-transaction", "mid-transaction-new-machine", "after-broker-commit"],
)
async def test_a_task_taken_over_mid_transaction_gives_every_output_exactly_once(
    memory_url: str, tmp_path: Path, after_broker_commit: bool, same_files: bool
) -> None:
    # Worker a's commits freeze; it processes 100 more.
    frozen = await frozen_worker(
        memory_url, tmp_path / "a", 100, 200, after_broker_commit=after_broker_commit
    )
    a, a_job, gate = frozen.worker, frozen.job, frozen.gate
    uncommitted = sk.MemoryBroker.for_url(memory_url)
    if not after_broker_commit:
        assert len(committed_view(memory_url, "echoed")) == 100  # 100 wait in open txns
    # Ten more reach a's tasks while all their commits are held (frozen_worker waits
    # for that), so that every one of them has work to commit when it wakes: held
    # after the broker's commit, a task would have none of its own, and an expired
    # member fetches nothing more, so it would never learn of the fence. The
    # profiles again, unchanged and just after those ten in time (stream time must
    # not pass the next clicks' windows): an expired member does not know whether
    # records are on their way, so a task of it goes on only while each of its
    # partitions has some queued (the clicks first: they are earlier).
    before = records_in_hand(a)
    sender = eos_app(memory_url, tmp_path / "sender")
    await send_clicks(sender, 200, 210)
    await sender.send_many("profiles", [(u, f"name-{u}", 1 + 209 * 100 + 50) for u in USERS])
    await wait_for(lambda: records_in_hand(a) == before + 15, what="the 15 fetched by a")

    # Its session times out; b takes over, from a copy of a's files (a restart on
    # the same machine) or from nothing (another machine: a full restore).
    sk.MemoryBroker.for_url(memory_url).expire_member("eos")
    b_dir = tmp_path / "b"
    if same_files:
        shutil.copytree(tmp_path / "a", b_dir)
    second = eos_app(memory_url, b_dir)
    b = Worker(second)
    b_job = asyncio.create_task(b.run())
    await wait_for(lambda: all_committed(second, memory_url), what="b committed all 210")
    await send_clicks(second, 210, 250)
    await wait_for(lambda: all_committed(second, memory_url), what="b committed all 250")
    check_exactly_once(second, memory_url, 250)

    # a wakes up: every task of it is fenced, closes, and writes nothing more; the
    # worker itself goes on.
    written = {t: len(uncommitted.records(t)) for t in ("echoed", "counted", "joined")}
    assert a.coordinator is not None
    fenced = list(a.coordinator.tasks.values())
    gate.set()
    await wait_for(
        lambda: all(t.state is TaskState.CLOSED for t in fenced), what="a's tasks closed"
    )
    assert not a_job.done()
    assert {t: len(uncommitted.records(t)) for t in written} == written
    check_exactly_once(second, memory_url, 250)
    a.stop()
    b.stop()
    await asyncio.wait_for(asyncio.gather(a_job, b_job), 20)
    truth = Counter(USERS[i % 5] for i in range(250))
    assert table_in_files(b_dir, second) == dict(truth)


async def test_a_fenced_commit_leaves_the_store_file_at_its_last_commit(
    memory_url: str, tmp_path: Path
) -> None:
    """The fenced task's changes since its last commit never reach SQLite."""
    frozen = await frozen_worker(memory_url, tmp_path, 50, 60)
    app, worker, job, gate = frozen.app, frozen.worker, frozen.job, frozen.gate
    # Its session expires and another producer takes every task's transactional id,
    # as a new owner would (a fenced task whose partitions are still its worker's
    # starts again: test_a_transaction_the_broker_aborted_at_its_timeout_is_redone).
    sk.MemoryBroker.for_url(memory_url).expire_member("eos")
    transport = sk.transport.MemoryTransport(memory_url)
    for task_id in app.topology().task_ids():
        await transport.transactional_producer(f"eos-{task_id}").start()
    gate.set()
    assert worker.coordinator is not None
    await wait_for(lambda: not worker.coordinator.tasks, what="tasks fenced")  # type: ignore[union-attr]
    worker.stop()
    await asyncio.wait_for(job, 20)
    assert table_in_files(tmp_path, app) == dict(Counter(USERS[i % 5] for i in range(50)))


async def test_an_aborted_transaction_is_redone_once_from_the_committed_offsets(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction that fails (a broker error, say) aborts; the task starts again
    from its committed offsets with its uncommitted state dropped, and the worker
    and its other tasks never stop. A bad record's dead letter is in the same
    transaction as the record, so it too appears once."""
    app = eos_app(memory_url, tmp_path)
    app.topics["clicks"].on_error = sk.ErrorPolicy.DEAD_LETTER
    await app.send_many("profiles", [(u, f"name-{u}", 0) for u in USERS])
    await send_clicks(app, 0, 100)
    worker = Worker(app)
    job = asyncio.create_task(worker.run())
    await wait_for(lambda: all_committed(app, memory_url), what="first 100 committed")
    assert worker.coordinator is not None
    failing = worker.coordinator.tasks[sk.TaskId(0, 0)]
    producer = failing.producer
    assert producer is not None
    commit = producer.commit

    async def fail_once(offsets: Mapping[TopicPartition, int], group_id: str) -> Any:
        producer.commit = commit  # type: ignore[method-assign]
        await producer.abort()
        raise TransactionAborted("injected: the broker refused the commit")

    producer.commit = fail_once  # type: ignore[method-assign]
    await send_clicks(app, 100, 150)
    sk.MemoryBroker.for_url(memory_url).append("clicks", 0, b"user1", b"not a number", (), 1)
    await send_clicks(app, 150, 200)
    await wait_for(lambda: all_committed(app, memory_url), what="all 200 committed")
    assert worker.coordinator.tasks[sk.TaskId(0, 0)] is not failing  # a new instance
    assert not job.done()
    assert "injected: the broker refused the commit" in caplog.text
    check_exactly_once(app, memory_url, 200)
    dead = committed_view(memory_url, "eos-dlq")
    assert [r.value for r in dead] == [b"not a number"]
    worker.stop()
    await asyncio.wait_for(job, 20)
    assert table_in_files(tmp_path, app) == dict(Counter(USERS[i % 5] for i in range(200)))


async def test_a_transaction_the_broker_aborted_at_its_timeout_is_redone(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker aborts a transaction that outlived `transaction_timeout_ms` and bumps
    the producer's epoch, which fences the task (Kafka since KIP-360). Nobody took it
    over: the group still gives its partitions to this worker, which starts it again
    from its committed offsets, as Kafka Streams' rejoin after a TaskMigratedException
    does. The partitions of such a task used to stay paused for good, waiting for a
    new owner that never came."""
    frozen = await frozen_worker(memory_url, tmp_path, 100, 200)
    app, worker, job, gate = frozen.app, frozen.worker, frozen.job, frozen.gate
    broker = sk.MemoryBroker.for_url(memory_url)
    # The commits hang; meanwhile every open transaction outlives its timeout.
    clock, overdue = broker.transactions.clock, app.settings.transaction_timeout_ms / 1000 + 1
    broker.transactions.clock = lambda: clock() + overdue
    broker.transactions.expire()
    gate.set()
    await wait_for(lambda: all_committed(app, memory_url), what="all 200 committed")
    check_exactly_once(app, memory_url, 200)
    assert "the group still gives its partitions to this worker" in caplog.text
    worker.stop()
    await asyncio.wait_for(job, 20)
    assert table_in_files(tmp_path, app) == dict(Counter(USERS[i % 5] for i in range(200)))


async def test_a_zombie_commit_before_the_new_owner_fences_it_is_not_processed_again(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group gives a's partitions to b, whose consumer takes its positions from the
    committed offsets then; a (its session expired, still running) commits a
    transaction before b's producers register their transactional ids and fence it.
    b must read its input from after that commit, as Kafka Streams does by fencing
    before its consumer fetches the positions. b used to process those 100 records
    a second time (found by tests/test_exactly_once_faults.py)."""
    frozen = await frozen_worker(memory_url, tmp_path / "a", 100, 200)
    first, a, a_job, gate = frozen.app, frozen.worker, frozen.job, frozen.gate
    broker = sk.MemoryBroker.for_url(memory_url)
    # b's producers are slow to register (a busy transaction coordinator, say).
    may_register = asyncio.Event()
    register = MemoryTransactionalProducer.start

    async def slow_start(producer: MemoryTransactionalProducer) -> None:
        await may_register.wait()
        await register(producer)

    monkeypatch.setattr(MemoryTransactionalProducer, "start", slow_start)
    broker.expire_member("eos")
    second = eos_app(memory_url, tmp_path / "b")
    b = Worker(second)
    b_job = asyncio.create_task(b.run())
    tasks = len(second.topology().task_ids())
    await wait_for(
        lambda: b.coordinator is not None and len(b.coordinator.tasks) == tasks,
        what="b assigned every task",
    )
    gate.set()  # a's transactions commit: nothing has fenced them yet
    await wait_for(lambda: all_committed(first, memory_url), what="a committed all 200")
    may_register.set()
    await send_clicks(second, 200, 250)
    await wait_for(lambda: all_committed(second, memory_url), what="b committed all 250")
    check_exactly_once(second, memory_url, 250)
    a.stop()
    b.stop()
    await asyncio.wait_for(asyncio.gather(a_job, b_job), 20)
