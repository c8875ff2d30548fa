"""Interactive queries in one process on memory://: the worker's web server and app.query.

Each test runs a worker in-process with `web_port=0` (a free port) and asks it over
HTTP with aiohttp's client, as a user's service would; status codes, bodies and
headers are what the tests check (docs/querying.md lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import running, samples, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit.errors import NotAvailable, StateError
from streamkit.runtime.worker import Worker

pytestmark = pytest.mark.timeout(60)


class Click(BaseModel):
    user: str
    page: str


class Visit(BaseModel):
    page: str
    count: int


def clicks_app(url: str, data_dir: Path, **settings: Any) -> sk.App:
    """Counts per user (str keys, int values), the last visit per user (model values),
    clicks per user and 10 s window, counts per int key, and a global table."""
    app = sk.App("web", broker=url, data_dir=data_dir, web_port=0, web_host="127.0.0.1", **settings)
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=4)
    scores = app.topic("scores", key_type=int, value_type=int, partitions=3)
    counts = app.table("counts", key_type=str, value_type=int, default=int)
    visits = app.table("visits", key_type=str, value_type=Visit)
    windowed = app.windowed_table("per-window", size=10, key_type=str, value_type=int, default=int)
    totals = app.table("totals", key_type=int, value_type=int, default=int)
    app.global_ktable(app.topic("pages", key_type=str, value_type=str, partitions=2))

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> Any:
        async for event in stream.events():
            user, click = event.key, event.value
            counts[user] += 1
            visits[user] = Visit(page=click.page, count=counts[user])
            for start in windowed.windows_for(event.timestamp):
                windowed[user, start] += 1

    @app.agent(scores)
    async def total(stream: sk.Stream) -> Any:
        async for key, score in stream.items():
            totals[key] += score

    return app


@pytest.fixture
async def web(memory_url: str, tmp_path: Path) -> AsyncIterator[tuple[sk.App, Worker, str]]:
    app = clicks_app(memory_url, tmp_path)
    async with running(app) as worker:
        yield app, worker, await serving(worker)


async def serving(worker: Worker) -> str:
    """The worker's web server's base URL, once it listens."""
    await wait_for(lambda: worker.queries is not None and bool(worker.queries.endpoint))
    assert worker.queries is not None
    return f"http://{worker.queries.endpoint}"


async def get(url: str) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def ready(base: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while (await get(f"{base}/health/ready"))[0] != 200:
        assert asyncio.get_running_loop().time() < deadline, "worker never became ready"
        await asyncio.sleep(0.02)


async def feed(app: sk.App, n_users: int = 9, per_user: int = 3) -> None:
    for i in range(per_user):
        for u in range(n_users):
            await app.send(
                "clicks", key=f"u{u}", value=Click(user=f"u{u}", page=f"/p{i}"), timestamp_ms=i
            )


async def until_counted(base: str, key: str, count: int) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        status, _, body = await get(f"{base}/tables/counts/{key}")
        if status == 200 and body["value"] == count:
            return body
        assert asyncio.get_running_loop().time() < deadline, (status, body)
        await asyncio.sleep(0.02)


async def test_a_key_is_served_with_its_task_and_worker(web: tuple[sk.App, Worker, str]) -> None:
    app, worker, base = web
    await ready(base)
    await feed(app)
    body = await until_counted(base, "u3", 3)
    assert body["worker"] == worker.queries.endpoint if worker.queries else False
    assert body["task"].startswith("0_") and body["stale"] is False and body["lag"] == 0
    status, _, visit = await get(f"{base}/tables/visits/u3")
    assert status == 200 and visit["value"] == {"page": "/p2", "count": 3}
    # The same through Python.
    assert await app.query("counts", "u3") == 3
    assert await app.query("visits", "u3") == Visit(page="/p2", count=3)
    assert await app.query("counts", "nobody", default=-1) == -1


async def test_status_codes_for_missing_keys_tables_and_bad_keys(
    web: tuple[sk.App, Worker, str],
) -> None:
    app, _, base = web
    await ready(base)
    status, _, body = await get(f"{base}/tables/counts/nobody")
    assert status == 404 and "nobody" in body["error"] and body["task"].startswith("0_")
    status, _, body = await get(f"{base}/tables/nosuch/x")
    assert status == 404 and "no table 'nosuch'" in body["error"] and "counts" in body["error"]
    status, _, body = await get(f"{base}/tables/totals/not-a-number")
    assert status == 400 and "int" in body["error"] and "not-a-number" in body["error"]
    status, _, body = await get(f"{base}/tables/counts/u1?stale_ok=maybe")
    assert status == 400 and "stale_ok" in body["error"]
    status, _, body = await get(f"{base}/tables/counts?limit=0")
    assert status == 400 and "limit" in body["error"]
    await app.send("scores", key=7, value=5)
    await app.send("scores", key=7, value=6)
    deadline = asyncio.get_running_loop().time() + 10
    while (await get(f"{base}/tables/totals/7"))[2].get("value") != 11:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    # Keys are parsed with the key type: "007" is the int 7.
    status, _, body = await get(f"{base}/tables/totals/007")
    assert status == 200 and body["key"] == 7 and body["value"] == 11


async def test_health_and_metrics(web: tuple[sk.App, Worker, str]) -> None:
    app, _, base = web
    assert (await get(f"{base}/health/live"))[:1] == (200,)
    await ready(base)
    status, _, body = await get(f"{base}/health/ready")
    assert status == 200 and body["ready"] is True
    assert set(body["tasks"]) == {f"0_{p}" for p in range(4)} | {f"1_{p}" for p in range(3)}
    await feed(app, n_users=2, per_user=1)
    await until_counted(base, "u1", 1)
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    assert response.status == 200
    processed = samples(text, "streamkit_records_processed_total")  # one series per task
    assert sum(v for labels, v in processed.items() if 'topic="clicks"' in labels) == 2


async def test_ranges_are_merged_in_key_order_across_partitions_and_paginated(
    web: tuple[sk.App, Worker, str],
) -> None:
    app, _, base = web
    await ready(base)
    await feed(app, n_users=25, per_user=1)
    await until_counted(base, "u24", 1)
    for u in range(25):
        await until_counted(base, f"u{u}", 1)
    expected = sorted(f"u{u}" for u in range(25))
    seen: list[str] = []
    url = f"{base}/tables/counts?limit=7"
    pages = 0
    while True:
        status, _, body = await get(url)
        assert status == 200, body
        seen += [r["key"] for r in body["rows"]]
        assert all(r["value"] == 1 for r in body["rows"])
        pages += 1
        if body["next"] is None:
            break
        url = f"{base}/tables/counts?limit=7&cursor={body['next']}"
    assert seen == expected and pages == 4
    # A key range: [from, to).
    status, _, body = await get(f"{base}/tables/counts?from=u1&to=u2")
    assert [r["key"] for r in body["rows"]] == [k for k in expected if "u1" <= k < "u2"]
    assert await app.query_range("counts", "u1", "u2") == [
        (k, 1) for k in expected if "u1" <= k < "u2"
    ]
    assert [k for k, _ in await app.query_range("counts", limit=3)] == expected[:3]


async def test_windowed_and_global_tables(web: tuple[sk.App, Worker, str]) -> None:
    app, _, base = web
    await ready(base)
    for ts in (1_000, 2_000, 15_000):
        await app.send("clicks", key="w", value=Click(user="w", page="/"), timestamp_ms=ts)
    await until_counted(base, "w", 3)
    status, _, body = await get(f"{base}/tables/per-window/w/windows?from=0&to=20000")
    assert status == 200
    assert body["windows"] == [
        {"start": 0, "end": 10_000, "value": 2},
        {"start": 10_000, "end": 20_000, "value": 1},
    ]
    assert await app.query_windows("per-window", "w", 5_000, 20_000) == [(10_000, 20_000, 1)]
    status, _, body = await get(f"{base}/tables/per-window/w")
    assert status == 400 and "windows" in body["error"]
    # A global table: every worker answers from its own copy.
    await app.send("pages", key="/home", value="Home")
    deadline = asyncio.get_running_loop().time() + 10
    while (await get(f"{base}/tables/pages/%2Fhome"))[0] != 200:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    status, _, body = await get(f"{base}/tables/pages/%2Fhome")
    assert body["value"] == "Home" and body["task"] is None
    assert await app.query("pages", "/home") == "Home"


async def test_query_from_a_timer_and_a_page(memory_url: str, tmp_path: Path) -> None:
    app = clicks_app(memory_url, tmp_path)
    seen: list[Any] = []

    @app.timer(0.05)
    async def look() -> None:
        with contextlib.suppress(NotAvailable):
            seen.append(await app.query("counts", "u0"))

    @app.page("/users/{user}")
    async def user_page(request: Any) -> dict[str, Any]:
        user = request.match_info["user"]
        return {"user": user, "clicks": await app.query("counts", user, default=0)}

    async with running(app) as worker:
        base = await serving(worker)
        await ready(base)
        await feed(app, n_users=1, per_user=2)
        await wait_for(lambda: 2 in seen, what="the timer to read 2 clicks")
        assert (await get(f"{base}/users/u0"))[::2] == (200, {"user": "u0", "clicks": 2})
        assert (await get(f"{base}/users/zed"))[2] == {"user": "zed", "clicks": 0}


async def test_query_outside_a_worker_says_so(tmp_path: Path) -> None:
    app = clicks_app("memory://", tmp_path)
    with pytest.raises(StateError, match="no running worker"):
        await app.query("counts", "u0")


async def sql(base: str, query: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/sql", params={"q": query}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_sql_reads_the_committed_state(web: tuple[sk.App, Worker, str]) -> None:
    app, _, base = web
    await ready(base)
    await feed(app, n_users=5, per_user=2)
    await until_counted(base, "u4", 2)
    query = "SELECT key, value FROM counts ORDER BY key"
    deadline = asyncio.get_running_loop().time() + 10
    while (answer := await sql(base, query))[1].get("rows") != [[f"u{u}", 2] for u in range(5)]:
        assert asyncio.get_running_loop().time() < deadline, answer
        await asyncio.sleep(0.05)
    # JSON fields of model values, and aggregates.
    status, body = await sql(
        base, "SELECT value->>'page' AS page, count(*) AS n FROM visits GROUP BY page"
    )
    assert status == 200 and body["columns"] == ["page", "n"] and body["rows"] == [["/p1", 5]]
    status, body = await sql(base, "SELECT key, value FROM counts WHERE key = 'u3'")
    assert body["rows"] == [["u3", 2]] and body["truncated"] is False
    assert list(body["workers"].values()) == [[f"0_{p}" for p in range(4)]]


async def test_sql_refuses_anything_but_a_select_and_keeps_its_limits(
    memory_url: str, tmp_path: Path
) -> None:
    app = clicks_app(memory_url, tmp_path, sql_max_rows=3, sql_timeout_s=0.2)
    async with running(app) as worker:
        base = await serving(worker)
        await ready(base)
        for bad in (
            "DELETE FROM counts",
            "WITH x AS (SELECT 1) DELETE FROM counts",
            "SELECT 1; DROP TABLE counts",
            "ATTACH DATABASE '/tmp/x' AS x",
        ):
            status, body = await sql(base, bad)
            assert status == 400, (bad, body)
            assert "SELECT" in body["error"] or "not authorized" in body["error"], body
        status, body = await sql(base, "SELECT * FROM no_such_table")
        assert status == 400 and "no_such_table" in body["error"]
        # At most sql_max_rows rows, and it says there were more.
        query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10) "
        status, body = await sql(base, query + "SELECT i FROM n")
        assert status == 200 and body["rows"] == [[1], [2], [3]] and body["truncated"] is True
        # A query past its time limit is interrupted.
        endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        status, body = await sql(base, endless + "SELECT max(i) FROM n")
        assert status == 400 and "sql_timeout_s=0.2" in body["error"], body
        # The loop answered all along (the query ran in aiosqlite's thread).
        assert (await get(f"{base}/health/live"))[0] == 200


class HoldRestore(sk.RestoreListener):
    """Holds every restore after its first batch until released."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def on_batch_restored(self, *_: Any) -> None:
        self.holding.set()
        await self.release.wait()


async def test_stale_ok_lets_a_restoring_copy_answer_with_its_lag(
    memory_url: str, tmp_path: Path
) -> None:
    app = clicks_app(memory_url, tmp_path, max_poll_records=1, commit_interval_s=0.01)
    async with running(app) as worker:
        base = await serving(worker)
        await ready(base)
        for round_ in range(1, 3):  # each round committed apart: 2 changelog records a key
            await feed(app, n_users=30, per_user=1)
            for u in range(30):
                await until_counted(base, f"u{u}", round_)
    # Lose the state files: the next worker restores every table from its changelog,
    # five records a batch, and holds after the first batch.
    for path in (tmp_path / "web").glob("0_*/*.sqlite*"):
        path.unlink()
    listener = HoldRestore()
    app.set_restore_listener(listener)
    async with running(app) as worker:
        await asyncio.wait_for(listener.holding.wait(), 10)
        base = await serving(worker)
        status, headers, body = await get(f"{base}/tables/counts/u5")
        assert status == 503 and headers["Retry-After"] == "1" and "restoring" in body["error"]
        assert (await get(f"{base}/health/ready"))[0] == 503
        try:
            status, _, body = await get(f"{base}/tables/counts/u5?stale_ok=true")
            assert status in (200, 404) and body["stale"] is True and body["lag"] > 0, body
        finally:
            listener.release.set()
        await ready(base)
        status, _, body = await get(f"{base}/tables/counts/u5?stale_ok=true")
        assert (status, body["value"], body["stale"], body["lag"]) == (200, 2, False, 0)


async def test_streamkit_sql_asks_a_running_worker(web: tuple[sk.App, Worker, str]) -> None:
    from click.testing import CliRunner

    from streamkit.cli import main

    app, _, base = web
    await ready(base)
    await feed(app, n_users=3, per_user=1)
    await until_counted(base, "u2", 1)
    runner = CliRunner()
    query = "SELECT key, value FROM counts ORDER BY key"
    expected = "key\tvalue\nu0\t1\nu1\t1\nu2\t1\n"
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # SQL reads what the tasks committed to their files
        result = await asyncio.to_thread(
            runner.invoke, main, ["sql", "x:app", query, "--url", base]
        )
        if result.output == expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (result.exit_code, result.output) == (0, expected)
    result = await asyncio.to_thread(
        runner.invoke, main, ["sql", "x:app", "DELETE FROM counts", "--url", base]
    )
    assert result.exit_code == 1 and "400: only SELECT" in result.output
