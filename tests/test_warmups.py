"""Warm-up replicas on a real broker (issue 14, KIP-441): a stateful task moves to a
joining worker only once a warm-up copy there has caught up.

Two `sk_counting_table` workers with their own data dirs (two machines, as far as
their state goes); `acceptable_recovery_lag` is 500 changelog records and each task
holds over 1,000 keys, so the joining worker starts out too far behind.
"""

from __future__ import annotations

import re

import pytest
from cluster import (
    Cluster,
    Feeder,
    WorkerProcess,
    create_topic,
    ends_of,
    produce,
    read_topic,
    wait_for_commits,
    wait_until,
)

APP = "sk_counting_table:app"
TASKS = frozenset(f"0_{p}" for p in range(4))
LAG_BOUND = 500

pytestmark = pytest.mark.timeout(90)


async def test_a_joining_worker_takes_tasks_over_only_after_warming_up(
    cluster: Cluster, kafka_url: str, topic_name
) -> None:  # type: ignore[no-untyped-def]
    app_id = topic_name("app")
    source, sink = f"{app_id}-in", f"{app_id}-out"
    await create_topic(kafka_url, source, 4)
    await create_topic(kafka_url, sink, 4)
    env = {
        "SKT_APP_ID": app_id,
        "SKT_INPUT": source,
        "SKT_OUTPUT": sink,
        "STREAMKIT_ACCEPTABLE_RECOVERY_LAG": str(LAG_BOUND),
        # The hand-over must come from the warm-ups having caught up, not the interval.
        "STREAMKIT_PROBING_REBALANCE_INTERVAL_S": "600",
    }
    a = cluster.start(APP, "a", env=env)
    await cluster.wait_for_assignment([a], TASKS)
    state = await produce(kafka_url, source, 4, [(b"key%d" % i, b"x") for i in range(6_000)])
    await wait_for_commits(kafka_url, app_id, source, ends_of(state, 4), details=cluster.output)

    def key(i: int) -> bytes:
        return b"key%d" % (i % 6_000)

    feeder = Feeder(kafka_url, source, 4, rate=400, key_of=key).start()
    b = cluster.start(APP, "b", env=env)

    # 1. b joins: the leader keeps every stateful task on a, and b warms up copies.
    held = await warmup_plan(a, b)
    await b.wait_for_line(r"owns tasks: none")
    produced_when_warming = len(feeder.produced)
    warming = frozenset(re.findall(r"\d+_\d+", held))
    assert len(warming) == 2, held  # max_warmup_replicas (2) of the 2 tasks b should get

    # 2. Once caught up, b asks for the rebalance that hands them over.
    await b.wait_for_line(r"streamkit\.warmups: warm-up copies caught up", timeout=30)
    await b.wait_for_line(r"owns tasks: " + " ".join(sorted(warming)), timeout=30)
    produced = await feeder.stop()
    await wait_for_commits(kafka_url, app_id, source, ends_of(produced, 4), details=cluster.output)

    # 3. While b warmed up, a went on producing the outputs of the tasks b took over.
    moved = {int(t.split("_")[1]) for t in warming}
    outputs = await read_topic(kafka_url, sink, 4)
    late_inputs = {(p.partition, p.offset) for p in produced[produced_when_warming:]}
    by_a = {
        (int(part), int(offset))
        for r in outputs
        if r.value
        for _, part, offset, worker in [r.value.decode().split()]
        if worker == "a"
    }
    for partition in moved:
        assert any((partition, o) in by_a for (p, o) in late_inputs if p == partition), (
            f"a produced nothing on partition {partition} while b warmed up\n{cluster.output()}"
        )
    # 4. And b's restore at the hand-over was the tail only: within the lag bound.
    restored = b.restored()
    assert set(restored) == warming, restored
    assert all(n <= LAG_BOUND for n in restored.values()), restored
    for w in (a, b):
        await w.stop()
    cluster.check_no_crash()


async def warmup_plan(a: WorkerProcess, b: WorkerProcess) -> str:
    """The leader's line saying which tasks stay on a while b warms them up."""
    pattern = re.compile(
        r"streamkit\.assignor: tasks [\d_ ]+ stay on \S+ while \S+ warms up copies"
    )

    def found() -> str | None:
        hit = pattern.search(a.log()) or pattern.search(b.log())
        return None if hit is None else hit[0]

    line: str = await wait_until(
        found,
        timeout=30,
        what="the leader's warm-up plan",
        details=lambda: a.output() + "\n" + b.output(),
    )
    return line
