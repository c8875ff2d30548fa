"""Task directories are locked: two workers sharing a data dir never open the same
task's SQLite files (streamkit/state/task_dir_lock.py).

The other worker is played by a real second process that takes the lock on a task
directory and holds it until told to let go, as a worker closing that task would.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import read, running, wait_for
from test_tables import design_app, latest_outputs, send, stored_counts

from streamkit.state.task_dir_lock import TaskDirLock

HOLDER = """
import sys, time
from pathlib import Path
from streamkit.state.task_dir_lock import TaskDirLock
lock = TaskDirLock(Path(sys.argv[1]))
assert lock.try_acquire(), "the holder could not take the lock"
print("held", flush=True)
release = Path(sys.argv[2])
while not release.exists():
    time.sleep(0.02)
"""


class Holder:
    """A process holding the lock of one task directory until `let_go()`."""

    def __init__(self, task_dir: Path, release: Path) -> None:
        self.release = release
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(task_dir), str(release)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "held"

    def let_go(self) -> None:
        self.release.touch()
        self.process.wait(timeout=10)


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Callable[[], Holder]]:
    """Starts a process holding `{tmp_path}/clicks/0_1` (task 0_1 of the design app)."""
    started: list[Holder] = []

    def start() -> Holder:
        started.append(Holder(tmp_path / "clicks" / "0_1", tmp_path / "release"))
        return started[-1]

    try:
        yield start
    finally:
        for h in started:
            h.process.kill()
            h.process.wait()


def test_a_locked_task_directory_cannot_be_locked_again_until_released(
    tmp_path: Path,
) -> None:
    first, second = TaskDirLock(tmp_path / "0_0"), TaskDirLock(tmp_path / "0_0")
    assert first.try_acquire()
    # A second open of the lock file conflicts, in this process as in another.
    assert not second.try_acquire()
    assert second.holder() == f"pid {os.getpid()}"
    first.release()
    assert second.try_acquire()
    second.release()


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_ends(
    hold: Callable[[], Holder], tmp_path: Path
) -> None:
    holder = hold()
    lock = TaskDirLock(tmp_path / "clicks" / "0_1")
    assert not lock.try_acquire()
    assert lock.holder() == f"pid {holder.process.pid}"
    holder.process.kill()  # as kill -9 would: the kernel drops the lock
    holder.process.wait()
    assert lock.try_acquire()
    lock.release()


async def test_a_task_waits_for_its_directory_and_then_uses_it(
    memory_url: str, tmp_path: Path, hold: Callable[[], Holder], caplog: pytest.LogCaptureFixture
) -> None:
    holder = hold()
    caplog.set_level(logging.INFO, logger="streamkit.task")
    app, clicks, views = design_app(memory_url, tmp_path, state_dir_lock_wait_s=60)
    sent = await send(app, clicks, 400)
    async with running(app):
        await wait_for(lambda: "task 0_1 waits up to 60 s for pid" in caplog.text)
        # Tasks 0_0, 0_2 and 0_3 are not held up by 0_1.
        assert not (tmp_path / "clicks" / "0_1" / "view-counts.sqlite").exists()
        holder.let_go()
        await wait_for(lambda: len(read(app, views)) == 400)
    assert "task 0_1: got its state directory" in caplog.text
    assert "without local state" not in caplog.text
    assert latest_outputs(app, views) == dict(sent)
    assert stored_counts(tmp_path, "clicks", "view-counts") == dict(sent)


async def test_a_task_whose_directory_stays_locked_works_without_local_state(
    memory_url: str, tmp_path: Path, hold: Callable[[], Holder], caplog: pytest.LogCaptureFixture
) -> None:
    # A first run leaves counts in the changelog, and in 0_1's files.
    app, clicks, views = design_app(memory_url, tmp_path)
    sent = await send(app, clicks, 260)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 260)
    before = (tmp_path / "clicks" / "0_1" / "view-counts.sqlite").read_bytes()
    holder = hold()

    app, clicks, views = design_app(memory_url, tmp_path, state_dir_lock_wait_s=0.3)
    sent += await send(app, clicks, 130, start=260)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 390)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("task 0_1: its state directory"), warnings
    assert f"still locked by pid {holder.process.pid} after 0 s" in warnings[0]
    assert "working without local state" in warnings[0]
    # The counts went on from the changelog, and nothing touched 0_1's own files.
    assert latest_outputs(app, views) == dict(sent)
    assert (tmp_path / "clicks" / "0_1" / "view-counts.sqlite").read_bytes() == before
    # The private copy is gone with the task.
    assert not list((tmp_path / "clicks" / ".private").rglob("*.sqlite"))
