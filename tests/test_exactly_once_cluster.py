"""Exactly-once with real `streamkit worker` processes on the test broker (Tansu).

What Tansu supports is asserted here: transactions commit their outputs together
with the input offsets, a worker killed before it commits is redone from the last
committed offset, and a worker frozen past its session timeout is fenced when its
tasks move and writes nothing more once it wakes. What Tansu does not do, hide the
records of aborted transactions from read_committed readers, is left to
`tests/test_exactly_once.py` on memory://, which does; each test says where that
limit shows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from cluster import Cluster, Feeder, committed_offsets, ends_of, produce
from counting import APP, PARTITIONS, TASKS, Count, Counting

EOS = {"STREAMKIT_PROCESSING_GUARANTEE": "exactly_once"}

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def counting(kafka_url: str, topic_name: Callable[[str], str]) -> Counting:
    return Counting(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def key_of(i: int) -> bytes:
    return b"user-%d" % (i % 23)


def per_key(outputs: list[Count], worker: str | None = None) -> dict[str, list[int]]:
    counts: defaultdict[str, list[int]] = defaultdict(list)
    for o in outputs:
        if worker is None or o.worker == worker:
            counts[o.key].append(o.count)
    return dict(counts)


async def test_transactions_commit_the_outputs_with_their_input_offsets(
    counting: Counting,
    cluster: Cluster,
) -> None:
    await counting.create_topics()
    produced = await produce(
        counting.url, counting.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(2000)]
    )
    worker = cluster.start(APP, "w1", env={**counting.env, **EOS})
    await worker.wait_for_line("guarantee=exactly_once")
    outputs = await counting.settle(cluster, produced)
    truth = Counter(p.key.decode() for p in produced)
    # One output per input, and each key counted 1..n in order: nothing twice.
    assert sorted((o.partition, o.offset) for o in outputs) == sorted(
        (p.partition, p.offset) for p in produced
    )
    assert per_key(outputs) == {k: list(range(1, n + 1)) for k, n in truth.items()}
    assert await counting.changelog_values() == dict(truth)
    await worker.stop()
    cluster.check_no_crash()


async def test_a_worker_killed_before_its_commit_is_redone_from_the_last_committed_offset(
    counting: Counting,
    cluster: Cluster,
) -> None:
    """w1 never commits (a one-hour interval): its work sits in open transactions when
    it is killed. w2's producers fence w1's and abort them, and w2 processes every
    record from the last committed offset (none), so its own outputs count each key
    exactly 1..n and the table equals the truth.

    Tansu limit: it does not hide w1's aborted outputs from readers, so they are still
    in the output topic (Kafka's read_committed consumers would not see them); they
    are told apart by the worker name in each output.
    """
    await counting.create_topics()
    produced = await produce(
        counting.url, counting.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(800)]
    )
    env = {**counting.env, **EOS}
    w1 = cluster.start(APP, "w1", env={**env, "STREAMKIT_COMMIT_INTERVAL_S": "3600"})
    await wait_until_outputs(counting, 800, worker="w1")
    assert await committed_offsets(counting.url, counting.app_id, counting.input, PARTITIONS) == (
        dict.fromkeys(range(PARTITIONS), -1)
    )
    w1.kill()
    w2 = cluster.start(APP, "w2", env=env)
    outputs = await counting.settle(cluster, produced)
    truth = Counter(p.key.decode() for p in produced)
    assert per_key(outputs, "w2") == {k: list(range(1, n + 1)) for k, n in truth.items()}
    assert await counting.changelog_values() == dict(truth)
    await w2.stop()


async def wait_until_outputs(counting: Counting, n: int, *, worker: str) -> None:
    """Until `worker` has written at least `n` outputs (Tansu shows open transactions')."""
    end = time.monotonic() + 45
    while sum(o.worker == worker for o in await counting.outputs()) < n:
        assert time.monotonic() < end, f"{worker} did not write {n} outputs within 45 s"
        await asyncio.sleep(0.2)


async def wait_until_committed(counting: Counting, ends: dict[int, int]) -> None:
    end = time.monotonic() + 45
    while True:
        done = await committed_offsets(counting.url, counting.app_id, counting.input, PARTITIONS)
        if all(done[p] >= e for p, e in ends.items()):
            return
        assert time.monotonic() < end, f"committed {done}, not {ends}, within 45 s"
        await asyncio.sleep(0.2)


async def test_a_frozen_worker_is_fenced_when_its_tasks_move_and_writes_nothing_more(
    counting: Counting,
    cluster: Cluster,
) -> None:
    """w1 is frozen (SIGSTOP) past its session timeout; w2 takes every task, and its
    producers fence w1's. Woken up (SIGCONT), w1's tasks find their producers fenced:
    each logs it and closes, the worker does not crash, and not one more output of w1
    reaches the broker.

    Tansu limit: the transaction w1 left open (its outputs since its last commit) is
    aborted by w2's InitProducerId, but Tansu still shows those outputs, and w2's
    restore reads their changelog records; so the table is asserted at or above the
    truth here, and equal to it on memory://.
    """
    await counting.create_topics()
    env = {**counting.env, **EOS}
    w1 = cluster.start(APP, "w1", env=env)
    w2 = cluster.start(APP, "w2", env=env)
    split = await cluster.wait_for_assignment([w1, w2], TASKS)
    assert split["w1"]
    feeder = Feeder(counting.url, counting.input, PARTITIONS, rate=400, key_of=key_of).start()
    try:
        await wait_until_outputs(counting, 200, worker="w1")
        marks = cluster.marks()
        os.kill(w1.popen.pid, signal.SIGSTOP)
        try:
            frozen_outputs = sum(o.worker == "w1" for o in await counting.outputs())
            await cluster.wait_for_assignment([w2], TASKS, since=marks, timeout=45)
            # w2 processes and commits past where w1 stood, while w1 is still frozen.
            await feeder.wait_for(len(feeder.produced) + 400)
            ends = ends_of(list(feeder.produced), PARTITIONS)
            await wait_until_committed(counting, ends)
        finally:
            os.kill(w1.popen.pid, signal.SIGCONT)
        await w1.wait_for_line(r"task 0_\d+ was fenced", timeout=30)
        w1.terminate()
        code = await w1.wait_exit(30)
    finally:
        produced = await feeder.stop()
    assert code == 0, w1.output()
    assert "Traceback" not in w1.log(), w1.output()
    outputs = await counting.settle(cluster, produced)
    assert sum(o.worker == "w1" for o in outputs) == frozen_outputs
    truth = Counter(p.key.decode() for p in produced)
    final = await counting.changelog_values()
    assert all(final[k] >= n for k, n in truth.items()), (final, truth)
    await w2.stop()
