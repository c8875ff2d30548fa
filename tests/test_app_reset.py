"""`streamkit reset APP --to-...`: the next worker processes the input again from the
chosen position with fresh state (Kafka's kafka-streams-application-reset, with
KafkaStreams#cleanUp's removal of local state).

In-process on memory:// for the plan, the refusals and the fallback to truncating
internal topics where a broker will not delete them; through the command line with
real worker processes on Tansu (which deletes topics, but cannot truncate them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    Cluster,
    app_topics,
    committed_offsets,
    produce,
    read_topic,
    run_cli,
    wait_for_commits,
)
from helpers import read, running, wait_for

import streamkit as sk
from streamkit.app_reset import Position, apply_reset, plan_reset
from streamkit.offsets import ResetRefused
from streamkit.transport.base import TopicPartition
from streamkit.transport.group_admin import MemoryGroupAdmin


def counting_app(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """Counts clicks per user in a table and outputs each user's running count."""
    app = sk.App("recount", broker=url, data_dir=data_dir)
    clicks = app.topic("clicks", value_type=str, partitions=2)
    out = app.topic("counted", value_type=int, partitions=2)
    counts = app.table("counts", default=int)

    @app.agent(clicks, sink=out)
    async def count(stream: sk.Stream) -> Any:
        async for user, _ in stream.items():
            counts[user] += 1
            yield user, counts[user]

    return app, clicks, out


def per_user(outputs: Sequence[tuple[Any, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for user, count in outputs:
        out.setdefault(user, []).append(count)
    return out


async def run_until_done(app: sk.App, out: sk.Topic, outputs: int) -> None:
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == outputs, what=f"{outputs} outputs")


CLICKS = [(f"user{i % 3}", "click", 1_000 * i) for i in range(12)]
FIRST_RUN = {f"user{u}": [1, 2, 3, 4] for u in range(3)}


async def counted_once(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic]:
    """The counting app, after a worker counted CLICKS (and stopped); its output topic."""
    app, clicks, out = counting_app(url, data_dir)
    await app.send_many(clicks, CLICKS)
    await run_until_done(app, out, 12)
    assert per_user(read(app, out)) == FIRST_RUN
    return app, out


async def test_a_reset_to_earliest_reprocesses_the_input_with_fresh_state(
    memory_url: str, tmp_path: Path
) -> None:
    app, out = await counted_once(memory_url, tmp_path)

    admin = MemoryGroupAdmin(memory_url)
    broker = sk.MemoryBroker.for_url(memory_url)
    async with running(app):  # refused while a worker runs
        await wait_for(lambda: broker.member_count("recount") == 1, what="the worker's join")
        with pytest.raises(ResetRefused, match="1 running member: stop every worker"):
            await plan_reset(app, admin, Position("earliest"))

    # The plan (--dry-run) names everything and changes nothing.
    plan = await plan_reset(app, admin, Position("earliest"))
    assert plan.describe() == [
        f"reset of app 'recount' on {memory_url} to the earliest offsets:",
        "  committed offset of clicks[0]: 4 -> 0 (4 records to be processed again)",
        "  committed offset of clicks[1]: 8 -> 0 (8 records to be processed again)",
        "  internal topic recount-counts-changelog: delete",
        "  internal topic recount-status: delete",
        f"  local state {tmp_path / 'recount'}: remove",
    ]
    assert broker.committed("recount", TopicPartition("clicks", 0)) == 4
    assert "recount-counts-changelog" in broker.topics() and (tmp_path / "recount").exists()

    assert await apply_reset(plan, admin) == []
    assert broker.committed("recount", TopicPartition("clicks", 0)) == 0
    assert "recount-counts-changelog" not in broker.topics()
    assert not (tmp_path / "recount").exists()

    # Counted again from the start, from nothing: the same counts a second time.
    await run_until_done(app, out, 24)
    assert per_user(read(app, out)) == {user: [*c, *c] for user, c in FIRST_RUN.items()}


async def test_a_reset_to_a_time_or_an_offset_starts_each_partition_there(
    memory_url: str, tmp_path: Path
) -> None:
    app, out = await counted_once(memory_url, tmp_path)
    admin = MemoryGroupAdmin(memory_url)
    broker = sk.MemoryBroker.for_url(memory_url)

    def first_at_or_after(ms: int) -> dict[int, int]:
        found: dict[int, int] = {}
        for partition in range(2):
            stamps = [r.timestamp for r in broker.records("clicks", partition)]
            found[partition] = next((i for i, t in enumerate(stamps) if t >= ms), len(stamps))
        return found

    plan = await plan_reset(app, admin, Position("datetime", 6_000))
    assert {m.tp.partition: m.after for m in plan.moves} == first_at_or_after(6_000)
    assert 0 < sum(m.after for m in plan.moves) < 12
    plan = await plan_reset(app, admin, Position("offset", 6))  # kept within each log
    assert {m.tp.partition: m.after for m in plan.moves} == {0: 4, 1: 6}
    plan = await plan_reset(app, admin, Position("latest"))
    assert {m.tp.partition: m.after for m in plan.moves} == {0: 4, 1: 8}
    assert await apply_reset(plan, admin) == []
    await run_until_done(app, out, 12)  # nothing left to process, nothing counted twice
    assert len(read(app, out)) == 12


class NoDeletes(MemoryGroupAdmin):
    """A broker that will not delete topics (delete.topic.enable=false, or no ACL)."""

    def __init__(self, url: str, *, truncates: bool) -> None:
        super().__init__(url)
        self.truncates = truncates

    async def delete_topics(self, topics: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(topics, "TopicDeletionDisabledError")

    async def truncate(
        self, offsets: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, str | None]:
        if self.truncates:
            return await super().truncate(offsets)
        return dict.fromkeys(offsets, "UnsupportedVersionError")


async def test_internal_topics_a_broker_will_not_delete_are_truncated_instead(
    memory_url: str, tmp_path: Path
) -> None:
    app, out = await counted_once(memory_url, tmp_path)

    plan = await plan_reset(app, NoDeletes(memory_url, truncates=False), Position("earliest"))
    not_done = await apply_reset(plan, NoDeletes(memory_url, truncates=False))
    assert (
        len(not_done) == 2 and "recount-counts-changelog: the broker would neither" in (not_done[0])
    )

    plan = await plan_reset(app, NoDeletes(memory_url, truncates=True), Position("earliest"))
    assert await apply_reset(plan, NoDeletes(memory_url, truncates=True)) == []
    broker = sk.MemoryBroker.for_url(memory_url)
    changelog = TopicPartition("recount-counts-changelog", 0)
    assert broker.start_offset(changelog) == broker.end_offset(changelog) > 0
    # The truncated changelog restores nothing: counted afresh.
    await run_until_done(app, out, 24)
    assert per_user(read(app, out)) == {user: [*c, *c] for user, c in FIRST_RUN.items()}


# Tansu, through the command line ------------------------------------------------------


@pytest.mark.timeout(120)
async def test_streamkit_reset_on_kafka_makes_the_next_worker_count_afresh(
    cluster: Cluster, topic_name: Callable[[str], str]
) -> None:
    url = cluster.kafka_url
    env = await app_topics(url, topic_name, 4)
    group, source, sink = env["SKT_APP_ID"], env["SKT_INPUT"], env["SKT_OUTPUT"]
    changelog = f"{group}-counts-changelog"
    produced = await produce(url, source, 4, [(f"user{i % 8}".encode(), b"c") for i in range(40)])
    ends = {p: sum(1 for r in produced if r.partition == p) for p in range(4)}
    assert all(ends.values()), ends  # every partition committed, and reset

    data_dir = cluster.root / "w" / "data"
    worker = cluster.start("sk_counting_table:app", "w", env=env, data_dir=data_dir)
    await wait_for_commits(url, group, source, ends, details=cluster.output)
    reset = ["reset", "sk_counting_table:app", "--broker", url, "--data-dir", str(data_dir)]
    refused = await asyncio.to_thread(run_cli, env, [*reset, "--to-earliest"])
    assert refused.returncode == 1 and "stop every worker" in refused.stderr, refused
    await worker.stop()

    dry = await asyncio.to_thread(run_cli, env, [*reset, "--to-earliest", "--dry-run"])
    assert dry.returncode == 0, dry
    assert f"internal topic {changelog}: delete" in dry.stdout, dry.stdout
    assert dry.stdout.rstrip().endswith("dry run: nothing was changed"), dry.stdout
    assert await committed_offsets(url, group, source, 4) == ends
    assert (data_dir / group).exists()

    done = await asyncio.to_thread(run_cli, env, [*reset, "--to-earliest"])
    assert done.returncode == 0, done
    assert "done: the next worker processes the input again" in done.stdout, done.stdout
    assert await committed_offsets(url, group, source, 4) == dict.fromkeys(range(4), 0)
    assert not (data_dir / group).exists()

    cluster.start("sk_counting_table:app", "w", env=env, data_dir=data_dir)
    await wait_for_commits(url, group, source, ends, details=cluster.output)
    outputs = await read_topic(url, sink, 4)
    counts: dict[bytes | None, list[int]] = {}
    for record in outputs:
        counts.setdefault(record.key, []).append(int((record.value or b"").split()[0]))
    # Each user counted 1..5 in the first run, and 1..5 again after the reset.
    assert counts == {f"user{u}".encode(): [*range(1, 6), *range(1, 6)] for u in range(8)}
