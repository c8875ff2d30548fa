"""Scaling out and failing over with real worker processes on a real broker
(issue: "Kafka transport and the rebalance coordinator").

Every test runs `streamkit worker sk_scale_echo:app` subprocesses (tests/apps),
whose agent outputs one record per input naming the input (its id, partition and
offset), the worker that processed it and the agent instance's running count.
Each test has its own app id (= consumer group) and topics. Input is 4 partitions,
so there are 4 tasks, 0_0 .. 0_3 (64 in the test of records fetched right after an
assignment). Between two commits a worker can process at most what arrives in one
commit interval, which bounds the duplicates a SIGKILL may cause.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from cluster import (
    Cluster,
    Feeder,
    Produced,
    WorkerProcess,
    committed_offsets,
    create_topic,
    ends_of,
    partitions_of,
    produce,
    read_topic,
    uncommitted_window,
    wait_for_commits,
)

APP = "sk_scale_echo:app"
PARTITIONS = 4
TASKS = frozenset(f"0_{p}" for p in range(PARTITIONS))
RATE = 800  # input records per second while "input flows"

pytestmark = pytest.mark.timeout(90)


def key_of(i: int) -> bytes:
    return b"user-%d" % (i % 97)


@dataclass(frozen=True)
class Output:
    key: str
    input_id: int
    partition: int
    offset: int
    worker: str
    seen: int  # the agent instance's running count


@dataclass
class Echo:
    """One test's app: its names, and the environment its workers get."""

    url: str
    app_id: str
    input: str
    output: str
    partitions: int = PARTITIONS

    @property
    def env(self) -> dict[str, str]:
        return {
            "SKT_APP_ID": self.app_id,
            "SKT_INPUT": self.input,
            "SKT_OUTPUT": self.output,
            "SKT_PARTITIONS": str(self.partitions),
        }

    async def create_topics(self) -> None:
        await create_topic(self.url, self.input, self.partitions)
        await create_topic(self.url, self.output, self.partitions)

    async def outputs(self) -> list[Output]:
        out = []
        for r in await read_topic(self.url, self.output, self.partitions):
            assert r.key is not None and r.value is not None
            input_id, partition, offset, worker, seen = r.value.decode().split()
            out.append(
                Output(
                    r.key.decode(), int(input_id), int(partition), int(offset), worker, int(seen)
                )
            )
        return out

    async def committed(self) -> dict[int, int]:
        return await committed_offsets(self.url, self.app_id, self.input, self.partitions)


@pytest.fixture
def echo(kafka_url: str, topic_name: Callable[[str], str]) -> Echo:
    return Echo(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def check_outputs(
    produced: Sequence[Produced], outputs: Sequence[Output]
) -> dict[int, list[Output]]:
    """Every input has an output that names it rightly; returns the outputs per input id."""
    by_id: dict[int, list[Output]] = defaultdict(list)
    for o in outputs:
        by_id[o.input_id].append(o)
    missing = [p for p in produced if int(p.value) not in by_id]
    assert not missing, (
        f"{len(missing)} of {len(produced)} inputs have no output; missing offsets per "
        f"partition: {ranges(missing)}; output offsets per partition and worker: "
        f"{ranges(outputs)}"
    )
    assert set(by_id) == {int(p.value) for p in produced}, "outputs for inputs never produced"
    for p in produced:
        for o in by_id[int(p.value)]:
            assert (o.key.encode(), o.partition, o.offset) == (p.key, p.partition, p.offset), (p, o)
    return by_id


def ranges(records: Sequence[Produced] | Sequence[Output]) -> dict[str, list[tuple[int, int]]]:
    """Offsets as inclusive ranges, per partition (and worker, for outputs)."""
    offsets: dict[str, list[int]] = defaultdict(list)
    for r in records:
        where = f"{r.partition}/{r.worker}" if isinstance(r, Output) else str(r.partition)
        offsets[where].append(r.offset)
    out: dict[str, list[tuple[int, int]]] = {}
    for where, found in sorted(offsets.items()):
        spans: list[tuple[int, int]] = []
        for offset in sorted(set(found)):
            if spans and offset == spans[-1][1] + 1:
                spans[-1] = (spans[-1][0], offset)
            else:
                spans.append((offset, offset))
        out[where] = spans
    return out


def duplicated(by_id: dict[int, list[Output]]) -> dict[int, list[Output]]:
    return {i: outs for i, outs in by_id.items() if len(outs) > 1}


async def settle(
    echo: Echo, running: Cluster, produced: Sequence[Produced], within_s: float = 30
) -> list[Output]:
    """Until the group committed every produced input; then the whole output topic."""
    await wait_for_commits(
        echo.url,
        echo.app_id,
        echo.input,
        ends_of(produced, echo.partitions),
        timeout=within_s,
        details=running.output,
    )
    return await echo.outputs()


async def produced_after(feeder: Feeder, extra: int) -> None:
    """Until `extra` more records were produced than now: input keeps flowing."""
    await feeder.wait_for(len(feeder.produced) + extra)


# (a) ------------------------------------------------------------------------------


async def test_one_worker_processes_a_prefilled_topic_exactly_once(
    echo: Echo,
    cluster: Cluster,
) -> None:
    await echo.create_topics()
    produced = await produce(
        echo.url, echo.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(4000)]
    )
    assert {p.partition for p in produced} == set(range(PARTITIONS))

    worker = cluster.start(APP, "w1", env=echo.env)
    assert (await cluster.wait_for_assignment([worker], TASKS))["w1"] == TASKS
    outputs = await settle(echo, cluster, produced)

    by_id = check_outputs(produced, outputs)
    assert not duplicated(by_id), "an input was output twice without any failure"
    assert len(outputs) == len(produced)
    # Committed offsets are exactly the ends, not beyond.
    assert await echo.committed() == ends_of(produced, PARTITIONS)
    # Per partition, outputs follow input order and one agent instance saw them all.
    for p in range(PARTITIONS):
        mine = [o for o in outputs if o.partition == p]
        assert [o.offset for o in mine] == sorted(o.offset for o in mine)
        assert [o.seen for o in mine] == [o.offset + 1 for o in mine]
    await worker.stop()
    cluster.check_no_crash()


# (b) ------------------------------------------------------------------------------


async def test_a_second_worker_takes_half_of_the_tasks_while_input_flows(
    echo: Echo,
    cluster: Cluster,
) -> None:
    await echo.create_topics()
    feeder = Feeder(echo.url, echo.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        w1 = cluster.start(APP, "w1", env=echo.env)
        await cluster.wait_for_assignment([w1], TASKS)
        await produced_after(feeder, RATE // 2)
        marks = cluster.marks()
        w2 = cluster.start(APP, "w2", env=echo.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS, since=marks)
        await produced_after(feeder, RATE)
    finally:
        produced = await feeder.stop()
    outputs = await settle(echo, cluster, produced)

    assert len(split["w1"]) == len(split["w2"]) == 2, split
    by_id = check_outputs(produced, outputs)
    # A join is a clean hand-over: every task committed what it processed before
    # it let go, so nothing is processed twice.
    assert not duplicated(by_id), f"duplicates after a clean join: {list(duplicated(by_id))[:10]}"
    # Both workers processed records, each on its own tasks after the split.
    assert {o.worker for o in outputs} == {"w1", "w2"}
    assert {f"0_{o.partition}" for o in outputs if o.worker == "w2"} == split["w2"]
    cluster.check_no_crash()


async def test_agents_of_tasks_that_stay_keep_their_in_memory_state_across_a_rebalance(
    echo: Echo,
    cluster: Cluster,
) -> None:
    """Tasks are suspended, not closed, when revoked: an agent instance that stays on
    its worker goes on counting, one that moves starts over on the new worker."""
    await echo.create_topics()
    feeder = Feeder(echo.url, echo.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        w1 = cluster.start(APP, "w1", env=echo.env)
        await cluster.wait_for_assignment([w1], TASKS)
        await produced_after(feeder, RATE // 2)
        marks = cluster.marks()
        w2 = cluster.start(APP, "w2", env=echo.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS, since=marks)
        await produced_after(feeder, RATE)
    finally:
        produced = await feeder.stop()
    outputs = await settle(echo, cluster, produced)
    check_outputs(produced, outputs)

    kept = {int(t.split("_")[1]) for t in split["w1"]}
    moved = {int(t.split("_")[1]) for t in split["w2"]}
    for p in kept:
        mine = [o for o in outputs if o.partition == p]
        assert {o.worker for o in mine} == {"w1"}
        # One agent instance from offset 0 on, the rebalance in between.
        assert [o.seen for o in mine] == [o.offset + 1 for o in mine], f"partition {p}"
    for p in moved:
        on_w2 = [o for o in outputs if o.partition == p and o.worker == "w2"]
        assert on_w2, f"partition {p} moved to w2 but w2 output nothing of it"
        first = on_w2[0].offset
        assert [o.seen for o in on_w2] == [o.offset - first + 1 for o in on_w2], f"partition {p}"
    cluster.check_no_crash()


# (c) ------------------------------------------------------------------------------


async def test_the_survivor_of_a_kill_takes_every_task_and_loses_nothing(
    echo: Echo,
    cluster: Cluster,
) -> None:
    await echo.create_topics()
    feeder = Feeder(echo.url, echo.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        # Both join the new group's first generation together.
        w1 = cluster.start(APP, "w1", env=echo.env)
        w2 = cluster.start(APP, "w2", env=echo.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS)
        victim_partitions = partitions_of(split["w2"])
        # The kill lands after w2 committed on each of its partitions, while it works on.
        committed_before = await wait_for_commits(
            echo.url,
            echo.app_id,
            echo.input,
            dict.fromkeys(victim_partitions, 1),
            details=cluster.output,
        )
        marks = cluster.marks()
        w2.kill()
        await cluster.wait_for_assignment([w1], TASKS, since=marks)
        await produced_after(feeder, RATE // 2)
    finally:
        produced = await feeder.stop()
    outputs = await settle(echo, cluster, produced)

    assert w1.owned() == TASKS
    by_id = check_outputs(produced, outputs)
    dups = duplicated(by_id)
    # Survivors restart a partition from its committed offset (or 0 if none); w2
    # output up to its last record before it died.
    window = uncommitted_window(
        committed_before,
        [(o.partition, o.offset) for o in outputs if o.worker == "w2"],
        victim_partitions,
    )
    for outs in dups.values():
        o = outs[0]
        assert o.partition in victim_partitions, f"duplicate of a partition w2 did not own: {outs}"
        assert o.offset in window[o.partition], (
            f"an input outside w2's uncommitted window was processed twice: {outs}"
        )
        assert sorted(x.worker for x in outs) == ["w1", "w2"], outs
    # w2 had committed before it died: what is redone is less than all it did.
    assert all(w.start > 0 for w in window.values()), window
    cluster.check_no_crash()


# (d) ------------------------------------------------------------------------------


async def test_sigterm_hands_tasks_over_without_loss_or_duplicates(
    echo: Echo,
    cluster: Cluster,
) -> None:
    await echo.create_topics()
    feeder = Feeder(echo.url, echo.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        w1 = cluster.start(APP, "w1", env=echo.env)
        w2 = cluster.start(APP, "w2", env=echo.env)
        await cluster.wait_for_assignment([w1, w2], TASKS)
        await produced_after(feeder, RATE)
        marks = cluster.marks()
        await w2.stop()
        await cluster.wait_for_assignment([w1], TASKS, since=marks)
        await produced_after(feeder, RATE // 2)
    finally:
        produced = await feeder.stop()
    outputs = await settle(echo, cluster, produced)

    by_id = check_outputs(produced, outputs)
    dups = duplicated(by_id)
    assert not dups, f"{len(dups)} inputs output twice after a SIGTERM: {list(dups.items())[:5]}"
    assert {o.worker for o in outputs} == {"w1", "w2"}
    cluster.check_no_crash()


# (e) ------------------------------------------------------------------------------


async def test_three_workers_joining_one_after_another_end_balanced_with_few_moves(
    echo: Echo,
    cluster: Cluster,
) -> None:
    await echo.create_topics()
    feeder = Feeder(echo.url, echo.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    workers: list[WorkerProcess] = []
    try:
        for n in (1, 2, 3):
            marks = cluster.marks()
            workers.append(cluster.start(APP, f"w{n}", env=echo.env))
            await cluster.wait_for_assignment(workers, TASKS, since=marks)
            await produced_after(feeder, RATE // 2)
    finally:
        produced = await feeder.stop()
    outputs = await settle(echo, cluster, produced)

    check_outputs(produced, outputs)
    final = {w.name: w.owned() for w in workers}
    sizes = sorted(len(t or ()) for t in final.values())
    assert sizes == [1, 1, 2], final
    for w in workers:
        assert w.owned_history(), f"{w.name} never logged its tasks"
    plans = [m for w in workers for m in w.moves()]
    assert plans, "no leader logged its plan"
    for tasks, members, moved in plans:
        assert tasks == PARTITIONS
        # A newcomer takes its share and nothing else moves: with two workers the
        # newcomer gets 2 tasks, with three 1 (from whoever held 2).
        allowed = {1: PARTITIONS, 2: 2, 3: 1}[members]
        assert moved <= allowed, (plans, final)
    cluster.check_no_crash()


# records fetched before their task exists ---------------------------------------------


async def test_records_fetched_right_after_an_assignment_reach_their_tasks(
    echo: Echo,
    cluster: Cluster,
) -> None:
    """A worker's consumer hands out records of a partition as soon as the group has
    assigned it, while the rebalance listener may still be awaiting (it checks each
    partition's committed offset, closes old tasks) and before the partition's task
    exists. Those records must be processed, not dropped with the position past them.

    Here w1 takes over w2's 32 partitions, which have input waiting, and its listener
    checks 64 committed offsets one after the other before it creates their tasks."""
    echo.partitions = 64
    tasks = {f"0_{p}" for p in range(echo.partitions)}
    await echo.create_topics()

    async def more(run: int) -> list[Produced]:
        keys = range(3200 * run, 3200 * (run + 1))
        return await produce(
            echo.url, echo.input, echo.partitions, [(b"key-%d" % i, b"%d" % i) for i in keys]
        )

    produced = await more(0)
    w1 = cluster.start(APP, "w1", env=echo.env)
    w2 = cluster.start(APP, "w2", env=echo.env)
    await cluster.wait_for_assignment([w1, w2], tasks)
    await settle(echo, cluster, produced)
    marks = cluster.marks()
    await w2.stop()
    produced += await more(1)
    await cluster.wait_for_assignment([w1], tasks, since=marks)
    outputs = await settle(echo, cluster, produced, within_s=10)
    by_id = check_outputs(produced, outputs)
    assert not duplicated(by_id)
    await w1.stop()
