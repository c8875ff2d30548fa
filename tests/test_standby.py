"""Standby replicas on a real broker: a failover restores little because a warm copy
was kept (issue: "State ... standby replicas")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cluster import (
    Cluster,
    create_topic,
    end_offsets,
    ends_of,
    produce,
    wait_for_commits,
    wait_until,
)
from helpers import samples, scrape

from streamkit.devbroker import free_port
from streamkit.state.sqlite_store import read_checkpoint, store_path

APP = "sk_counting_table:app"
TASKS = frozenset(f"0_{p}" for p in range(4))

pytestmark = pytest.mark.timeout(120)


def checkpoints(data_dir: Path, app_id: str, tasks: frozenset[str]) -> dict[str, int | None]:
    """The changelog offset each local copy of the `counts` store reflects."""
    return {t: read_checkpoint(store_path(data_dir / app_id, t, "counts")) for t in tasks}


async def test_a_standby_makes_failover_restore_only_the_tail(
    cluster: Cluster,
    kafka_url: str,
    topic_name,  # type: ignore[no-untyped-def]
) -> None:
    app_id = topic_name("standby")
    source, sink = f"{app_id}-in", f"{app_id}-out"
    await create_topic(kafka_url, source, 4)
    await create_topic(kafka_url, sink, 4)
    env = {
        "SKT_APP_ID": app_id,
        "SKT_INPUT": source,
        "SKT_OUTPUT": sink,
        "STREAMKIT_NUM_STANDBY_REPLICAS": "1",
    }
    a = cluster.start(APP, "a", env=env)
    await cluster.wait_for_assignment([a], TASKS)
    marks = cluster.marks()
    port = free_port()
    b = cluster.start(APP, "b", env={**env, "STREAMKIT_METRICS_PORT": str(port)})
    owned = await cluster.wait_for_assignment([a, b], TASKS, since=marks)
    await b.wait_for_line("standby tasks: " + " ".join(sorted(owned["a"])))

    produced = await produce(
        kafka_url, source, 4, [(f"user{i % 400}".encode(), b"click") for i in range(8_000)]
    )
    # Every input committed: its outputs and its table changes are acknowledged.
    await wait_for_commits(
        kafka_url, app_id, source, ends_of(produced, 4), timeout=60, details=cluster.output
    )
    changelog = f"{app_id}-counts-changelog"
    ends = await end_offsets(kafka_url, changelog, 4)
    a_tasks = owned["a"]
    cold = sum(ends[int(t.split("_")[1])] for t in a_tasks)
    assert cold > 0
    # b's standby copies of a's tasks catch up with the changelog.
    await wait_until(
        lambda: all(
            checkpoints(b.data_dir, app_id, a_tasks)[t] == ends[int(t.split("_")[1])]
            for t in a_tasks
        ),
        timeout=30,
        what="b's standbys to reach the changelog's end",
        details=lambda: f"{checkpoints(b.data_dir, app_id, a_tasks)} vs {ends}",
    )
    # Its metrics say so: every record of a's changelogs restored into a standby copy,
    # and no lag left (a lag sample is taken after each pass of the standby).
    text = await asyncio.to_thread(scrape, port)
    restored = samples(text, "streamkit_restored_records_total")
    assert sum(restored[f'{{store="counts",task="{t}"}}'] for t in a_tasks) == cold, text
    lags = samples(text, "streamkit_standby_lag_records")
    assert lags == {f'{{store="counts",task="{t}"}}': 0.0 for t in a_tasks}, text
    standby_keys = samples(text, "streamkit_store_keys")
    assert sum(v for k, v in standby_keys.items() if 'role="standby"' in k) > 0, text

    marks = cluster.marks()
    a.kill()
    await cluster.wait_for_assignment([b], TASKS, since=marks, timeout=60)
    await wait_until(
        lambda: set(b.restored()) >= a_tasks,
        timeout=30,
        what="b's restore lines for a's tasks",
        details=cluster.output,
    )
    after_failover = sum(b.restored()[t] for t in a_tasks)
    # A cold restore replays every changelog record of a's tasks; the standby, none.
    assert after_failover < cold
    assert after_failover == 0, cluster.output()
    cluster.check_no_crash()
