"""Workers publish the tasks they own; `read_status` (behind `streamkit status`) sees them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from cluster import Cluster, app_topics, run_cli
from helpers import eventually, running

import streamkit as sk
from streamkit.runtime.status import WorkerStatus, describe, read_status, status_topic
from streamkit.transport import transport_for


async def test_a_worker_publishes_its_tasks_and_retires_on_stop(memory_url: str) -> None:
    app = sk.App("watched", broker=memory_url)
    numbers = app.topic("numbers", value_type=int, partitions=3)

    @app.agent(numbers)
    async def consume(stream: sk.Stream) -> None:
        async for _ in stream:
            pass

    transport = transport_for(memory_url)
    seen: list[sk.runtime.status.WorkerStatus] = []

    async def poll() -> bool:
        seen[:] = await read_status(transport, status_topic(app.id))
        return bool(seen) and seen[0].tasks == ["0_0", "0_1", "0_2"]

    async with running(app) as worker:
        await eventually(poll, what="the worker's status")
        assert len(seen) == 1 and seen[0].tasks == ["0_0", "0_1", "0_2"]
        assert worker.status is not None and seen[0].worker == worker.status.worker_id
        assert seen[0].processing_guarantee == "at_least_once"
    assert await read_status(transport, status_topic(app.id)) == []


async def test_a_worker_reports_its_processing_guarantee(memory_url: str) -> None:
    app = sk.App("guaranteed", broker=memory_url, processing_guarantee="exactly_once")
    app.topic("numbers", value_type=int, partitions=1)
    transport = transport_for(memory_url)

    async def reported() -> bool:
        status = await read_status(transport, status_topic(app.id))
        return [s.processing_guarantee for s in status] == ["exactly_once"]

    async with running(app):
        await eventually(reported, what="the worker's status with its guarantee")


async def test_a_worker_with_a_web_server_shows_its_address(memory_url: str) -> None:
    app = sk.App("served", broker=memory_url, web_port=0, web_host="127.0.0.1")
    app.topic("numbers", value_type=int, partitions=1)
    transport = transport_for(memory_url)
    seen: list[WorkerStatus] = []

    async def reported() -> bool:
        seen[:] = await read_status(transport, status_topic(app.id))
        return bool(seen) and seen[0].web is not None

    async with running(app) as worker:
        await eventually(reported, what="the worker's status with its web address")
        assert worker.queries is not None and seen[0].web == worker.queries.endpoint
        assert seen[0].web.startswith("127.0.0.1:")
        (line,) = describe(app.id, memory_url, seen, [], 0)[1:]
        assert line.endswith(f"  web http://{seen[0].web}")


def test_a_worker_silent_for_three_of_its_heartbeats_is_gone_and_its_tasks_unowned() -> None:
    now_ms = 1_000_000_000
    live = WorkerStatus(
        worker="h:1", host="h", pid=1, tasks=["0_0"], updated_ms=now_ms - 9_000, heartbeat_s=10
    )
    gone = WorkerStatus(
        worker="h:2", host="h", pid=2, tasks=["0_1"], updated_ms=now_ms - 3_500, heartbeat_s=1
    )
    lines = describe("a", "memory://", [live, gone], ["0_0", "0_1"], now_ms)
    assert lines[0] == "app a on memory://: 1 live worker, 1 gone, 1/2 tasks owned"
    assert lines[1].split()[:2] == ["h:1", "live"]
    assert lines[2].split()[:2] == ["h:2", "gone"]
    assert "no heartbeat for 4 s (gone after 3 s" in lines[2]
    assert lines[3] == "  not owned by any live worker: 0_1"


@pytest.mark.timeout(90)
async def test_status_marks_a_worker_killed_with_sigkill_gone_within_its_stated_timeout(
    cluster: Cluster, topic_name: Callable[[str], str]
) -> None:
    url = cluster.kafka_url
    env = {**await app_topics(url, topic_name, 4), "STREAMKIT_STATUS_INTERVAL_S": "1"}
    tasks = [f"0_{p}" for p in range(4)]
    worker = cluster.start("sk_counting_table:app", "w", env=env)
    await cluster.wait_for_assignment([worker], tasks)
    command = ["status", "sk_counting_table:app", "--broker", url]

    def status() -> list[str]:
        done = run_cli(env, command)
        assert done.returncode == 0, done
        return done.stdout.splitlines()

    def lines_for_worker(lines: list[str]) -> list[str]:
        return [line for line in lines if f":{worker.popen.pid} " in line]

    async def status_until(condition: Callable[[list[str]], bool], what: str) -> list[str]:
        seen: list[list[str]] = []

        async def poll() -> bool:
            seen.append(await asyncio.to_thread(status))
            return condition(seen[-1])

        # Deadline: the stated timeout (3 beats of 1 s) plus a status run or two.
        await eventually(poll, timeout=15, what=what)
        return seen[-1]

    lines = await status_until(
        lambda lines: "1 live worker, 4/4 tasks owned" in lines[0], "the worker's status"
    )
    (line,) = lines_for_worker(lines)
    assert " live " in line and "tasks: 0_0 0_1 0_2 0_3" in line, lines

    worker.kill()  # SIGKILL: no tombstone, no leave
    lines = await status_until(
        lambda lines: ", 1 gone," in lines[0], "the killed worker marked gone"
    )
    assert lines[0].endswith(": 0 live workers, 1 gone, 0/4 tasks owned"), lines
    (line,) = lines_for_worker(lines)
    assert "gone after 3 s: stopped without retiring, killed, or stuck" in line, lines
    assert lines[-1] == "  not owned by any live worker: 0_0 0_1 0_2 0_3", lines
