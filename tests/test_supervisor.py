"""`streamkit worker APP --processes N` and `streamkit scale` (issue 14).

On memory:// (each child has its own in-process broker, so only the processes are
under test): output prefixed per child, `streamkit scale`, a failing child stopping
the supervisor, and a SIGKILLed supervisor leaving no child behind. On Kafka
(Tansu), with a two-sub-topology app: both children own half of each
sub-topology; a child killed with SIGKILL is replaced and nothing is lost;
SIGTTIN and SIGTTOU change the count and the group rebalances to match; SIGTERM
stops the supervisor and every child cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import (
    APPS,
    Cluster,
    Feeder,
    WorkerProcess,
    create_topic,
    ends_of,
    read_topic,
    wait_for_commits,
    wait_until,
)

from streamkit.cli import _ProcessCount
from streamkit.runtime.supervisor import cpu_count
from streamkit.runtime.supervisor_control import read_control

pytestmark = pytest.mark.timeout(90)

STARTED = re.compile(r"streamkit\.supervisor: started (w\d+) \(pid (\d+)\)")
GONE = re.compile(r"streamkit\.supervisor: (w\d+) \(pid \d+\) (?:stopped|died)")
OWNS = re.compile(r"^\[(w\d+)\] .*streamkit\.coordinator: owns tasks: (.*)$", re.MULTILINE)


def children(supervisor: WorkerProcess) -> dict[str, int]:
    """Name -> pid of the children the supervisor's log says are running."""
    running: dict[str, int] = {}
    for line in supervisor.log().splitlines():
        if m := STARTED.search(line):
            running[m[1]] = int(m[2])
        elif m := GONE.search(line):
            running.pop(m[1], None)
    return running


def gone(pid: int) -> bool:
    """The process ended (a zombie whose parent died is as good as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except OSError:
        return True


def streamkit(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")},
    )


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Supervisors on memory://; whatever a test leaves running is killed, children too."""
    started: list[WorkerProcess] = []
    yield started
    for s in started:
        pids = children(s).values()
        s.kill()
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def start(supervisors: list[WorkerProcess], tmp_path: Path, app: str, *args: str) -> WorkerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    command = [sys.executable, "-m", "streamkit", "worker", app, *args]
    command += ["--data-dir", str(tmp_path / "data")]
    process = WorkerProcess(f"sup{len(supervisors)}", command, env, tmp_path, tmp_path)
    supervisors.append(process)
    return process


def test_process_counts() -> None:
    count = _ProcessCount()
    assert count.convert("auto", None, None) == cpu_count() >= 1
    assert count.convert("3", None, None) == 3
    for bad in ("0", "many"):
        with pytest.raises(Exception, match=r"fewer than 1|neither a number"):
            count.convert(bad, None, None)


async def test_scale_grows_a_running_supervisor_and_a_killed_one_leaves_no_child(
    supervisors: list[WorkerProcess], tmp_path: Path
) -> None:
    sup = start(supervisors, tmp_path, "sk_ticker:app", "--processes", "2")
    # Each child's lines come out prefixed with its name.
    for name in ("w1", "w2"):
        await wait_until(
            lambda name=name: re.search(rf"^\[{name}\] tick \d+ for k\d$", sup.stdout(), re.M),
            timeout=20,
            what=f"{name}'s ticks",
            details=sup.output,
        )
    scaled = streamkit(
        ["scale", "sk_ticker:app", "--processes", "3", "--data-dir", str(tmp_path / "data")], APPS
    )
    assert scaled.returncode == 0, scaled
    assert scaled.stdout.startswith("app ticker: 3 processes (was 2)"), scaled
    await wait_until(
        lambda: re.search(r"^\[w3\] tick", sup.stdout(), re.M),
        timeout=20,
        what="w3's ticks",
        details=sup.output,
    )
    pids = children(sup)
    assert sorted(pids) == ["w1", "w2", "w3"]

    # SIGKILL: no chance to stop them; they notice and stop by themselves.
    sup.kill()
    await wait_until(
        lambda: all(gone(p) for p in pids.values()),
        timeout=20,
        what=f"children {pids} to stop after their supervisor was killed",
    )
    # Its control file is left behind, but no supervisor holds it: `scale` says so.
    assert read_control(tmp_path / "data" / "ticker") is None


async def test_a_child_that_fails_stops_the_supervisor_with_its_error(
    supervisors: list[WorkerProcess], tmp_path: Path
) -> None:
    sup = start(supervisors, tmp_path, "sk_failing_agent:app", "--processes", "1")
    assert await sup.wait_exit(30) == 1, sup.output()
    log = sup.log()
    assert re.search(r"^\[w\d\] error: agent explode failed on numbers\[0\]@5", log, re.M), log
    assert "stopped with an error (above); it would fail again: stopping all" in log
    assert "starting a replacement" not in log


# On Kafka ----------------------------------------------------------------------------

TASKS = frozenset(f"{s}_{p}" for s in range(2) for p in range(4))


async def settled(sup: WorkerProcess, workers: int, since: int) -> dict[str, frozenset[str]]:
    """Until `workers` children run, each logged `owns tasks:` after log offset `since`,
    their latest lines split every task between them, and a leader planned for that
    many workers: the group rebalanced to them."""

    def check() -> dict[str, frozenset[str]] | None:
        log = sup.log()
        tail = log[since:]
        if f"assigned {len(TASKS)} tasks to {workers} workers" not in tail:
            return None
        running = children(sup)
        latest = {m[1]: frozenset(m[2].split()) - {"none"} for m in OWNS.finditer(tail)}
        if len(running) != workers or set(latest) < set(running):
            return None
        owned = {name: latest[name] for name in running}
        union = [t for ts in owned.values() for t in ts]
        return owned if sorted(union) == sorted(TASKS) else None

    result: dict[str, frozenset[str]] = await wait_until(
        check, timeout=40, what=f"the group to settle on {workers} workers", details=sup.output
    )
    return result


def per_subtopology(owned: frozenset[str]) -> list[int]:
    return [sum(t.startswith(f"{s}_") for t in owned) for s in range(2)]


async def test_processes_spread_both_subtopologies_survive_a_kill_and_grow_and_shrink(
    cluster: Cluster, kafka_url: str, topic_name
) -> None:  # type: ignore[no-untyped-def]
    app_id = topic_name("app")
    env = {
        "SKT_APP_ID": app_id,
        "SKT_INPUT_A": topic_name("a"),
        "SKT_INPUT_B": topic_name("b"),
        "SKT_OUTPUT": topic_name("out"),
    }
    for topic in ("SKT_INPUT_A", "SKT_INPUT_B", "SKT_OUTPUT"):
        await create_topic(kafka_url, env[topic], 4)

    def key(i: int) -> bytes:
        return b"k%d" % (i % 101)

    feeders = [
        Feeder(kafka_url, env["SKT_INPUT_A"], 4, rate=200, key_of=key).start(),
        Feeder(kafka_url, env["SKT_INPUT_B"], 4, rate=200, key_of=key, start=10**6).start(),
    ]
    sup = cluster.start("sk_two_subtopologies:app", "sup", env=env, args=["--processes", "2"])

    # 1. Two processes: each owns half of each sub-topology's tasks.
    owned = await settled(sup, 2, 0)
    assert [per_subtopology(ts) for ts in owned.values()] == [[2, 2], [2, 2]], owned

    # 2. kill -9 of a child and SIGTTIN: the supervisor replaces the child and adds a
    # third; the group settles on three (one rebalance for both: the dead member's
    # session has to expire first), every sub-topology spread over them.
    mark = len(sup.log())
    victim = children(sup)["w1"]
    os.kill(victim, signal.SIGKILL)
    await sup.wait_for_line(
        rf"w1 \(pid {victim}\) died \(killed by SIGKILL\): starting a replacement"
    )
    sup.popen.send_signal(signal.SIGTTIN)
    owned = await settled(sup, 3, mark)
    assert children(sup)["w1"] != victim
    for counts in zip(*(per_subtopology(ts) for ts in owned.values()), strict=True):
        assert max(counts) - min(counts) <= 1, owned

    # 3. SIGTTOU: two processes again, each with half of each sub-topology.
    mark = len(sup.log())
    sup.popen.send_signal(signal.SIGTTOU)
    await sup.wait_for_line(r"streamkit\.supervisor: w3 \(pid \d+\) stopped: exit status 0")
    owned = await settled(sup, 2, mark)
    assert [per_subtopology(ts) for ts in owned.values()] == [[2, 2], [2, 2]], owned

    # 4. Every input has its output, and SIGTERM stops the supervisor and its children.
    produced = [await f.stop() for f in feeders]
    for feeder_input, records in zip(("SKT_INPUT_A", "SKT_INPUT_B"), produced, strict=True):
        await wait_for_commits(
            kafka_url, app_id, env[feeder_input], ends_of(records, 4), details=sup.output
        )
    pids = children(sup).values()
    await sup.stop(timeout=40)
    assert "supervisor stopped cleanly" in sup.log()
    assert all(gone(p) for p in pids)
    outputs = {
        int(r.value.split()[0])
        for r in await read_topic(kafka_url, env["SKT_OUTPUT"], 4)
        if r.value
    }
    missing = [int(p.value) for records in produced for p in records if int(p.value) not in outputs]
    assert not missing, f"{len(missing)} inputs have no output: {missing[:20]}"
    cluster.check_no_crash()
