"""Tables across failures with real worker processes on a real broker (issue: "State:
per-task SQLite stores, tables, changelog topics, restore on reassignment").

Every test runs `streamkit worker sk_counting_table:app` subprocesses (tests/apps):
`counts[key] += 1` per input, output `<count> <partition> <offset> <worker>` under
the input's key. The table's changelog is `<app id>-counts-changelog`, one
partition per task (4). Each test has its own app id and topics.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cluster import (
    Cluster,
    Feeder,
    Produced,
    WorkerProcess,
    committed_offsets,
    create_topic,
    ends_of,
    partition_of,
    partitions_of,
    produce,
    uncommitted_window,
    wait_for_commits,
    wait_until,
)
from counting import APP, PARTITIONS, TASKS, Count, Counting, write_changelog

RATE = 800

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def counting(kafka_url: str, topic_name: Callable[[str], str]) -> Counting:
    return Counting(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def true_counts(produced: Sequence[Produced]) -> Counter[str]:
    return Counter(p.key.decode() for p in produced)


def last_counts(outputs: Sequence[Count]) -> dict[str, int]:
    """Each key's count in its last output (output partitions keep processing order)."""
    last: dict[str, int] = {}
    for o in outputs:
        last[o.key] = o.count
    return last


def key_of(i: int) -> bytes:
    return b"user-%d" % (i % 41)


# kill -9 ------------------------------------------------------------------------------


async def test_counts_survive_a_kill_within_the_uncommitted_window(
    counting: Counting,
    cluster: Cluster,
) -> None:
    await counting.create_topics()
    feeder = Feeder(counting.url, counting.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        w1 = cluster.start(APP, "w1", env=counting.env)
        w2 = cluster.start(APP, "w2", env=counting.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS)
        victim_partitions = partitions_of(split["w2"])
        # The kill lands after w2 committed on each of its partitions, while it works on.
        committed_before = await wait_for_commits(
            counting.url,
            counting.app_id,
            counting.input,
            dict.fromkeys(victim_partitions, 1),
            details=cluster.output,
        )
        marks = cluster.marks()
        w2.kill()
        await cluster.wait_for_assignment([w1], TASKS, since=marks)
        await feeder.wait_for(len(feeder.produced) + RATE // 2)
    finally:
        produced = await feeder.stop()
    outputs = await counting.settle(cluster, produced)

    # w1 restored what w2 had written to the changelog.
    assert set(w1.restored()) >= split["w2"], w1.output()
    truth = true_counts(produced)
    # Only records in w2's uncommitted window can have been counted twice.
    window = uncommitted_window(
        committed_before,
        [(o.partition, o.offset) for o in outputs if o.worker == "w2"],
        victim_partitions,
    )
    at_risk: Counter[str] = Counter(
        p.key.decode() for p in produced if p.offset in window.get(p.partition, ())
    )
    maxima: dict[str, int] = defaultdict(int)
    for o in outputs:
        maxima[o.key] = max(maxima[o.key], o.count)
    final = await counting.changelog_values()
    assert set(maxima) == set(truth) == set(final)
    for key, n in truth.items():
        assert n <= maxima[key] <= n + at_risk[key], (key, n, maxima[key], at_risk[key])
        assert final[key] == maxima[key] == last_counts(outputs)[key], key
    # Keys of w1's own partitions were never at risk: exact.
    for key, n in truth.items():
        if partition_of(key.encode(), PARTITIONS) not in victim_partitions:
            assert maxima[key] == n, key
    cluster.check_no_crash()


# restore from the changelog -----------------------------------------------------------


async def run_to_commit(
    counting: Counting, running: Cluster, worker: WorkerProcess, produced: Sequence[Produced]
) -> list[Count]:
    """Until `worker` owns every task and has committed all of `produced`; the output."""
    await running.wait_for_assignment([worker], TASKS, since={worker.name: 0})
    return await counting.settle(running, produced)


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
async def test_a_worker_restores_its_counts_when_its_state_files_are_lost(
    damage: str,
    counting: Counting,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    await counting.create_topics()
    data_dir = tmp_path / "state"
    first = await produce(
        counting.url,
        counting.input,
        PARTITIONS,
        [(key_of(i), b"%d" % i) for i in range(3000)],
    )
    w1 = cluster.start(APP, "w1", env=counting.env, data_dir=data_dir)
    await run_to_commit(counting, cluster, w1, first)
    await w1.stop()
    changelog = await counting.changelog_records()
    assert await counting.changelog_values() == true_counts(first)

    files = sorted(data_dir.rglob("counts.sqlite"))
    assert len(files) == PARTITIONS, files
    if damage == "deleted":
        for task_dir in (data_dir / counting.app_id).iterdir():
            for f in task_dir.iterdir():
                f.unlink()
    else:
        for f in files:
            size = max(f.stat().st_size, 8192)
            f.write_bytes(os.urandom(size))

    second = await produce(
        counting.url,
        counting.input,
        PARTITIONS,
        [(key_of(i), b"%d" % i) for i in range(3000, 4000)],
    )
    w1 = cluster.start(APP, "w1", env=counting.env, data_dir=data_dir)
    outputs = await run_to_commit(counting, cluster, w1, [*first, *second])
    await w1.stop()

    # Every changelog record was replayed, into a store rebuilt from nothing.
    per_task = Counter(f"0_{r.partition}" for r in changelog)
    assert w1.restored() == per_task, w1.output()
    if damage == "corrupted":
        assert w1.log().count("is unreadable") == PARTITIONS, w1.output()
    # Counting went on from the restored values, each input counted once.
    before = true_counts(first)
    later = {(p.partition, p.offset) for p in second}
    run2 = [o for o in outputs if (o.partition, o.offset) in later]
    assert len(run2) == len(second)
    by_key: dict[str, list[int]] = defaultdict(list)
    for o in run2:
        by_key[o.key].append(o.count)
    for key, n in true_counts(second).items():
        assert by_key[key] == list(range(before[key] + 1, before[key] + n + 1)), key
    assert await counting.changelog_values() == true_counts([*first, *second])
    cluster.check_no_crash()


async def test_a_changelog_of_many_large_batches_is_restored_to_its_last_record(
    counting: Counting,
    cluster: Cluster,
) -> None:
    """Tansu reports a partition's end as the last batch's first offset + 1: a restore
    that trusted it would lose the rest of the last batch."""
    await counting.create_topics()
    n = 50_000
    values = {f"key-{i:06d}-{'x' * 40}": 2 + i % 997 for i in range(n)}
    written = await write_changelog(counting, values)
    ends = ends_of(written, PARTITIONS)
    assert sum(ends.values()) == n
    # One input per key: its output is the restored value + 1.
    inputs = await produce(
        counting.url, counting.input, PARTITIONS, [(k.encode(), b"0") for k in values]
    )
    w1 = cluster.start(APP, "w1", env=counting.env)
    outputs = await run_to_commit(counting, cluster, w1, inputs)
    await w1.stop()

    assert w1.restored() == {f"0_{p}": ends[p] for p in range(PARTITIONS)}, w1.output()
    got = {o.key: o.count for o in outputs}
    assert len(outputs) == n
    wrong = {k: (v, got.get(k)) for k, v in values.items() if got.get(k) != v + 1}
    assert not wrong, f"{len(wrong)} keys restored wrong, e.g. {list(wrong.items())[:5]}"
    cluster.check_no_crash()


async def test_workers_joining_during_a_restore_end_with_every_task_running(
    counting: Counting,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    """One worker restores a table; two more join while it does. The tasks it gives
    away stop on it, the tasks it keeps go on, all input is counted once."""
    # Told of the rebalance within 0.3 s by a heartbeat.
    cluster.kafka_options = {**cluster.kafka_options, "heartbeat_interval_ms": 300}
    await counting.create_topics()
    n = 100_000
    values = {f"big-{i:07d}": 1 + i % 13 for i in range(n)}
    await write_changelog(counting, values)
    hot = list(values)[:200]
    # Input that waits while the first worker restores: its tasks queue it meanwhile.
    early = await produce(
        counting.url,
        counting.input,
        PARTITIONS,
        [(hot[i % len(hot)].encode(), b"%d" % i) for i in range(2000)],
    )
    go, release = tmp_path / "go", tmp_path / "release"
    gated = {**counting.env, "SKT_GO_FILE": str(go)}
    # w1's restores hold after their first batch until `release` exists (a
    # RestoreListener in the app), so the joins land inside them on any machine.
    w1 = cluster.start(APP, "w1", env={**counting.env, "SKT_HOLD_RESTORE_FILE": str(release)})
    # Started now, so that they have done their imports when they are told to join.
    w2 = cluster.start("sk_counting_table:app_when_told", "w2", env=gated)
    w3 = cluster.start("sk_counting_table:app_when_told", "w3", env=gated)
    workers = [w1, w2, w3]
    await cluster.wait_for_assignment([w1], TASKS)
    marks = cluster.marks()
    go.touch()
    await wait_until(
        lambda: all(w.owned() for w in (w2, w3)),
        timeout=40,
        what="the joining workers own tasks",
        details=cluster.output,
    )
    # The group changed while w1 was restoring: it heard of the rebalance (aiokafka
    # logs the heartbeat that tells it) and none of its restores has ended yet.
    log = w1.log()
    assert "because it is rebalancing" in log, log
    assert " restored " not in log, log
    release.touch()

    def all_joined() -> bool:
        latest = [w.owned() for w in workers]
        return (
            all(len(w.owned_history()) > marks.get(w.name, 0) for w in workers)
            and all(latest[1:])
            and set().union(*latest) == TASKS
        )

    await wait_until(
        all_joined, timeout=40, what="all three workers own tasks", details=cluster.output
    )
    # Every task runs on exactly one worker, none is left behind on w1.
    final = await cluster.wait_for_assignment(workers, TASKS, since=marks, timeout=10)
    assert sorted(len(t) for t in final.values()) == [1, 1, 2], final
    # New input after the joins: all of it is processed, all input is counted once.
    late = await produce(
        counting.url,
        counting.input,
        PARTITIONS,
        [(hot[i % len(hot)].encode(), b"%d" % i) for i in range(2000, 4000)],
    )
    outputs = await counting.settle(cluster, [*early, *late])
    truth = true_counts([*early, *late])
    last = last_counts(outputs)
    wrong = {
        k: (values[k], m, last.get(k)) for k, m in truth.items() if last.get(k) != values[k] + m
    }
    assert not wrong, f"{len(wrong)} keys miscounted (restored, inputs, counted): {wrong}"
    for w in workers:
        await w.stop()
    cluster.check_no_crash()


async def test_a_declared_partition_count_the_broker_contradicts_is_refused_at_start(
    counting: Counting,
    cluster: Cluster,
    kafka_url: str,
) -> None:
    """DESIGN.md invariant 5 on a real broker: the input exists with 2 partitions, the
    app declares 4; the worker stops before joining the group, in one line naming the
    topic and both counts, and nothing is consumed."""
    await create_topic(kafka_url, counting.input, 2)
    await create_topic(kafka_url, counting.output, PARTITIONS)
    await produce(kafka_url, counting.input, 2, [(key_of(i), b"%d" % i) for i in range(10)])
    worker = cluster.start(APP, "w1", env=counting.env)
    code = await worker.wait_exit(30)
    assert code == 1, worker.output()
    log = worker.log()
    assert f"topic {counting.input!r} has 2 partitions on the broker but the app declares 4" in (
        log
    ), worker.output()
    assert "Traceback" not in log, worker.output()
    assert "joining group" not in log, worker.output()
    assert await committed_offsets(kafka_url, counting.app_id, counting.input, 2) == {0: -1, 1: -1}
