"""A lock per task directory, so that two workers never open the same task's SQLite files.

Two workers on one machine may share a `--data-dir` (a second worker started for
more throughput, or a restarted one while the old process is still closing). A
task moving between them would otherwise be open in both for a moment: the old
owner committing its last batch while the new one restores, each writing the same
SQLite files. Kafka Streams locks its task directories for the same reason.

The lock is `fcntl.flock` on `{data_dir}/{app_id}/{task}/.lock`: exclusive,
held by an open file, released by the kernel when the process dies (a kill -9
leaves no stale lock behind). The holder writes its pid into the file, so that
the one waiting can say who holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = ".lock"
RETRY_EVERY_S = 0.1


class TaskDirLock:
    """An exclusive lock on one task directory, taken without blocking."""

    def __init__(self, task_dir: Path) -> None:
        self.task_dir = task_dir
        self.path = task_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this object holds it now."""
        if self._fd is not None:
            return True
        self.task_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds it, as its pid file says ("another process" when unreadable)."""
        with contextlib.suppress(OSError, ValueError):
            return f"pid {int(self.path.read_text().split()[0])}"
        return "another process"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the file drops the flock; the file stays for the next holder.
            os.close(fd)


async def acquire(
    lock: TaskDirLock,
    *,
    wait_s: float | None,
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Retry `lock` every RETRY_EVERY_S until it is ours, `wait_s` passes (None: no
    limit) or `cancelled()` turns true; True when it is ours."""
    loop = asyncio.get_running_loop()
    deadline = None if wait_s is None else loop.time() + wait_s
    while not lock.try_acquire():
        if cancelled() or (deadline is not None and loop.time() >= deadline):
            return False
        await asyncio.sleep(RETRY_EVERY_S)
    return True
