"""SIGTERM at each state of a worker: the process ends in bounded time and says how.

Every test runs real `streamkit worker sk_counting_table:app` processes (tests/apps)
on a real broker, holds the worker in one state by a condition it can see (a log
line, a file the app waits for), sends SIGTERM there, and checks what a user
would: the exit status, the time to exit, the last lines of the log, the offsets
the group committed. A clean stop exits 0 with "worker stopped cleanly"; a stop
whose shutdown could not finish in `shutdown_timeout_s` exits 3, with one line
naming what was left undone (README, "Stopping a worker").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import (
    APPS,
    Cluster,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    ends_of,
    produce,
    wait_for_commits,
    wait_until,
)
from counting import APP, PARTITIONS, TASKS, Counting, write_changelog

from streamkit.devbroker import DevBroker
from streamkit.runtime.worker import (
    EXIT_SHUTDOWN_TIMED_OUT,
    HARD_EXIT_GRACE_S,
    SHUTDOWN_OVERRUN_S,
)

SHUTDOWN_TIMEOUT_S = 4.0
# The longest a stop may take: the timeout, what a shutdown may run past it (see
# Worker._shut_down), and the time a loaded machine takes for the interpreter's exit.
EXIT_WITHIN_S = SHUTDOWN_TIMEOUT_S + SHUTDOWN_OVERRUN_S + 3.0
# Past this, only the hard-exit watchdog could have ended the process.
WATCHDOG_AT_S = SHUTDOWN_TIMEOUT_S + SHUTDOWN_OVERRUN_S + HARD_EXIT_GRACE_S

pytestmark = pytest.mark.timeout(120)


def env(names: Counting, **extra: str) -> dict[str, str]:
    return {**names.env, "STREAMKIT_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S), **extra}


@pytest.fixture
def names(kafka_url: str, topic_name: Callable[[str], str]) -> Counting:
    return Counting(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def key_of(i: int) -> bytes:
    return b"user-%d" % (i % 41)


async def terminate(worker: WorkerProcess) -> tuple[int, float]:
    """SIGTERM; the exit status and the seconds it took, failing past the watchdog."""
    began = time.monotonic()
    worker.terminate()
    code = await worker.wait_exit(timeout=WATCHDOG_AT_S + 10)
    return code, time.monotonic() - began


def assert_stopped_cleanly(worker: WorkerProcess, code: int, took: float) -> None:
    log = worker.log()
    assert code == 0, worker.output()
    assert took <= EXIT_WITHIN_S, (took, worker.output())
    assert "received SIGTERM: stopping" in log, worker.output()
    assert log.rstrip().endswith("worker stopped cleanly"), worker.output()
    assert "Traceback" not in log and " ERROR " not in log, worker.output()


def assert_stopped_past_the_timeout(worker: WorkerProcess, code: int, took: float) -> str:
    """Exit status 3 within the bound, one line saying what was left; that line."""
    log = worker.log()
    assert code == EXIT_SHUTDOWN_TIMED_OUT, worker.output()
    assert took <= EXIT_WITHIN_S, (took, worker.output())
    lines = [line for line in log.splitlines() if "shutdown took longer than" in line]
    assert len(lines) == 1, worker.output()
    assert "processed again on restart" in lines[0], lines
    assert "worker stopped, not cleanly (exit status 3)" in log, worker.output()
    assert "Traceback" not in log and "did not stop within" not in log, worker.output()
    return lines[0]


async def wait_until_output(names: Counting, n: int) -> None:
    deadline = time.monotonic() + 30
    while sum((await end_offsets(names.url, names.output, PARTITIONS)).values()) < n:
        assert time.monotonic() < deadline, f"fewer than {n} outputs within 30 s"


# the states -------------------------------------------------------------------------


async def test_sigterm_while_joining_the_group_starts_no_task(
    names: Counting, cluster: Cluster
) -> None:
    """Tansu holds a new group's first join for 3 s: the stop lands inside it. The join
    the consumer completes while it leaves must not start tasks nobody will close."""
    await names.create_topics()
    w1 = cluster.start(APP, "w1", env=env(names))
    await w1.wait_for_line(r"streamkit\.worker: joining group")
    code, took = await terminate(w1)

    assert_stopped_cleanly(w1, code, took)
    assert w1.owned_history() == [], w1.output()
    assert " restored " not in w1.log(), w1.output()
    # It holds nothing yet, so it does not wait for the broker to end the join.
    assert "leaving the group: gave up the group join in progress" in w1.log(), w1.output()


async def test_sigterm_while_restoring_stops_the_restore_and_exits_cleanly(
    names: Counting, cluster: Cluster
) -> None:
    await names.create_topics()
    n = 8000
    await write_changelog(names, {f"old-{i:06d}": i % 7 + 1 for i in range(n)})
    # Batches of 100 records, each 0.2 s longer: about 4 s of restore per task.
    slow = env(names, SKT_SLOW_RESTORE_S="0.2", STREAMKIT_MAX_POLL_RECORDS="20")
    w1 = cluster.start(APP, "w1", env=slow)
    await cluster.wait_for_assignment([w1], TASKS)
    code, took = await terminate(w1)

    assert_stopped_cleanly(w1, code, took)
    restored = w1.restored()
    assert set(restored) == TASKS, w1.output()
    assert sum(restored.values()) < n, restored  # each stopped between two batches


async def test_sigterm_while_a_restore_is_stuck_exits_within_the_timeout(
    names: Counting, cluster: Cluster, tmp_path: Path
) -> None:
    """A restore listener that never returns: the tasks cannot close, the worker ends."""
    await names.create_topics()
    await write_changelog(names, {f"old-{i:06d}": i % 7 + 1 for i in range(400)})
    never = tmp_path / "never-created"
    w1 = cluster.start(APP, "w1", env=env(names, SKT_HOLD_RESTORE_FILE=str(never)))
    await w1.wait_for_line(r"holding the restore of task", count=PARTITIONS)
    code, took = await terminate(w1)

    line = assert_stopped_past_the_timeout(w1, code, took)
    assert "tasks 0_0 0_1 0_2 0_3 did not commit" in line, line


async def test_sigterm_while_running_commits_everything_processed(
    names: Counting, cluster: Cluster
) -> None:
    await names.create_topics()
    w1 = cluster.start(APP, "w1", env=env(names))
    await cluster.wait_for_assignment([w1], TASKS)
    produced = await produce(
        names.url, names.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(2000)]
    )
    # Processed: every input has its output.
    await wait_until_output(names, len(produced))
    code, took = await terminate(w1)

    assert_stopped_cleanly(w1, code, took)
    committed = await committed_offsets(names.url, names.app_id, names.input, PARTITIONS)
    assert committed == ends_of(produced, PARTITIONS), w1.output()


async def test_sigterm_while_a_rebalance_waits_for_a_busy_task(
    names: Counting, cluster: Cluster, tmp_path: Path
) -> None:
    """w1's agents hold their first record; w2 joins, so w1's revocation callback waits
    for them to finish their batch: the stop lands inside that callback. w1 ends
    within the timeout, w2 takes every task and processes everything, w1's held
    records included."""
    await names.create_topics()
    release = tmp_path / "release"
    w1 = cluster.start(APP, "w1", env=env(names, SKT_HOLD_AGENT_FILE=str(release)))
    await cluster.wait_for_assignment([w1], TASKS)
    produced = await produce(
        names.url, names.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(400)]
    )
    await w1.wait_for_line(r"holding at offset", count=PARTITIONS)
    w2 = cluster.start(APP, "w2", env=env(names))
    await w1.wait_for_line(r"because it is rebalancing")
    code, took = await terminate(w1)

    line = assert_stopped_past_the_timeout(w1, code, took)
    assert "tasks 0_0 0_1 0_2 0_3 did not commit" in line, line
    await cluster.wait_for_assignment([w2], TASKS)
    await wait_for_commits(
        names.url,
        names.app_id,
        names.input,
        ends_of(produced, PARTITIONS),
        details=cluster.output,
    )
    await w2.stop()


async def test_sigterm_while_the_broker_is_unreachable_exits_within_the_timeout(
    topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The broker is gone: nothing can be committed. The worker says so and exits."""
    # A broker of its own: this test takes it away.
    with DevBroker() as broker:
        names = Counting(broker.url, topic_name("app"), topic_name("in"), topic_name("out"))
        running = Cluster(broker.url, tmp_path)
        try:
            await names.create_topics()
            w1 = running.start(APP, "w1", env=env(names))
            await running.wait_for_assignment([w1], TASKS)
            produced = await produce(
                names.url, names.input, PARTITIONS, [(key_of(i), b"%d" % i) for i in range(200)]
            )
            await wait_for_commits(
                names.url,
                names.app_id,
                names.input,
                ends_of(produced, PARTITIONS),
                details=running.output,
            )
            broker.stop()
            code, took = await terminate(w1)
        finally:
            running.kill_all()

    log = w1.log()
    assert code in (0, EXIT_SHUTDOWN_TIMED_OUT), w1.output()
    assert took <= EXIT_WITHIN_S, (took, w1.output())
    assert "Traceback" not in log and "Unclosed" not in log, w1.output()
    assert "did not stop within" not in log, w1.output()
    last = log.rstrip().splitlines()[-1]
    assert "worker stopped" in last, w1.output()


async def test_a_worker_whose_event_loop_is_blocked_is_ended_by_the_watchdog(
    tmp_path: Path,
) -> None:
    """The last bound: user code that never yields cannot keep the process alive."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env["STREAMKIT_SHUTDOWN_TIMEOUT_S"] = "1"
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(  # noqa: ASYNC220 (started, not waited for)
            [sys.executable, "-m", "streamkit", "worker", "sk_blocking_loop:app"],
            cwd=APPS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await wait_until(
            lambda: "blocking the loop" in stderr.read_text(), timeout=30, what="the block"
        )
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.poll() is not None, timeout=60, what="the exit")
        took = time.monotonic() - began
    finally:
        process.kill()
        process.wait()
    log = stderr.read_text()
    assert process.returncode == EXIT_SHUTDOWN_TIMED_OUT, log
    assert 1 + SHUTDOWN_OVERRUN_S <= took <= 1 + SHUTDOWN_OVERRUN_S + HARD_EXIT_GRACE_S + 5, took
    assert "the worker did not stop within" in log and "of SIGTERM: exiting now (status 3)" in log
    # Where it was stuck: the user's blocking call, on the main thread's stack.
    assert "sk_blocking_loop.py" in log, log
