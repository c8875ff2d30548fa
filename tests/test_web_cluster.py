"""Interactive queries across real worker processes on a real broker (Tansu).

Two `streamkit worker sk_counting_table:app --web-port 0` processes: a key owned
by one is asked through the other and answered by its owner; a range query
through one worker returns every key of both, once, in order, page by page; SQL
through one worker returns the table's contents; after kill -9 of the owner, the
survivor answers 503 with Retry-After until it owns and has restored the task,
its /health/ready says false during that restore, and then it serves the
restored value.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cluster import Cluster, WorkerProcess, partition_of, partitions_of, produce
from counting import APP, PARTITIONS, TASKS, Counting

pytestmark = pytest.mark.timeout(120)

WEB = ["--web-port", "0", "--web-host", "127.0.0.1"]
KEYS = [f"k{i:02d}" for i in range(40)]


@pytest.fixture
def counting(kafka_url: str, topic_name: Any) -> Counting:
    return Counting(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


async def endpoint(worker: WorkerProcess) -> str:
    line = await worker.wait_for_line(r"web server on http://\S+")
    found = re.search(r"http://(\S+)", line)
    assert found is not None
    return f"http://{found[1]}"


async def get(url: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def poll(
    ask: Callable[[], Awaitable[Any]],
    accept: Callable[[Any], bool],
    *,
    timeout: float,  # noqa: ASYNC109 (a deadline to poll against)
    what: str,
    cluster: Cluster,
) -> Any:
    """Until `accept(await ask())`; fail at the deadline with the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await ask()
        if accept(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last answer {answer}\n{cluster.output()}")
        await asyncio.sleep(0.1)


async def whole_range(base: str, limit: int) -> list[tuple[str, int]] | str:
    """Every row, page by page; the failing answer's text if a page failed."""
    rows: list[tuple[str, int]] = []
    url = f"{base}/tables/counts?limit={limit}"
    while True:
        status, _, body = await get(url)
        if status != 200:
            return f"{status} {body}"
        rows += [(r["key"], r["value"]) for r in body["rows"]]
        if body["next"] is None:
            return rows
        url = f"{base}/tables/counts?limit={limit}&cursor={body['next']}"


def sql_url(base: str, query: str) -> str:
    return f"{base}/sql?q={quote(query)}"


async def test_queries_are_forwarded_to_the_owner_and_survive_its_kill(
    counting: Counting, cluster: Cluster, tmp_path: Path
) -> None:
    await counting.create_topics()
    hold = tmp_path / "release-restore"
    a = cluster.start(APP, "a", env={**counting.env, "SKT_HOLD_RESTORE_FILE": str(hold)}, args=WEB)
    b = cluster.start(APP, "b", env=counting.env, args=WEB)
    split = await cluster.wait_for_assignment([a, b], TASKS)
    base_a, base_b = await endpoint(a), await endpoint(b)
    await produce(counting.url, counting.input, PARTITIONS, [(k.encode(), b"x") for k in KEYS * 3])
    expected = [(k, 3) for k in sorted(KEYS)]

    # 1. A range through A: every key once, in key order, over pages, from both workers.
    await poll(
        lambda: whole_range(base_a, 7),
        lambda rows: rows == expected,
        timeout=30,
        what="the whole table through worker a",
        cluster=cluster,
    )

    # 2. A key of B's, asked through A, is B's answer.
    b_partitions = partitions_of(split["b"])
    key = next(k for k in KEYS if partition_of(k.encode(), PARTITIONS) in b_partitions)
    task = f"0_{partition_of(key.encode(), PARTITIONS)}"
    status, _, body = await get(f"{base_a}/tables/counts/{key}")
    assert status == 200, body
    assert (body["value"], body["task"], body["worker"]) == (3, task, base_b.split("//")[1])

    # 3. SQL through A: the table's contents, from both workers' state files.
    await poll(
        lambda: get(sql_url(base_a, "SELECT key, value FROM counts ORDER BY key")),
        lambda answer: answer[0] == 200 and answer[2]["rows"] == [list(r) for r in expected],
        timeout=30,
        what="SQL through worker a",
        cluster=cluster,
    )

    # 4. kill -9 B: until A owns the task, asking A for B's key is a 503 with Retry-After.
    marks = cluster.marks()
    b.kill()
    status, headers, body = await get(f"{base_a}/tables/counts/{key}")
    assert status == 503 and int(headers["Retry-After"]) >= 1, body
    # A takes B's tasks; its restore holds (SKT_HOLD_RESTORE_FILE) after its first batch.
    await cluster.wait_for_assignment([a], TASKS, since=marks)
    await a.wait_for_line(r"holding the restore of task")
    status, headers, body = await get(f"{base_a}/tables/counts/{key}")
    assert status == 503 and "Retry-After" in headers and "restoring" in body["error"], body
    status, _, body = await get(f"{base_a}/health/ready")
    assert status == 503 and body["ready"] is False, body
    assert body["tasks"][task] == "restoring", body

    # 5. Restored: A serves the value B had, and is ready.
    hold.touch()
    await poll(
        lambda: get(f"{base_a}/tables/counts/{key}"),
        lambda answer: answer[0] == 200,
        timeout=30,
        what="the restored key through worker a",
        cluster=cluster,
    )
    status, _, body = await get(f"{base_a}/tables/counts/{key}")
    assert (body["value"], body["task"], body["worker"]) == (3, task, base_a.split("//")[1])
    # Ready once the other task taken from B has restored too.
    await poll(
        lambda: get(f"{base_a}/health/ready"),
        lambda answer: answer[0] == 200 and answer[2]["ready"] is True,
        timeout=30,
        what="worker a ready after the restore",
        cluster=cluster,
    )
    assert await whole_range(base_a, 1000) == expected
    await a.stop()
