"""A task's state stores on disk (Kafka Streams' ProcessorStateManager): its task
directory locked, or a private one, and every store restored from its changelog
before the task's first record (DESIGN.md invariant 3).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransportError
from ..state.restore import restore
from ..state.task_dir_lock import TaskDirLock, acquire
from ..state.task_store import TaskStore
from ..topology import TaskId

if TYPE_CHECKING:
    from .task import TaskServices

log = logging.getLogger("streamkit.task")

# A restore that finds the broker away tries again after this, doubling up to the max.
RESTORE_RETRY_FIRST_S = 0.5
RESTORE_RETRY_MAX_S = 10.0


class StateManager:
    """Only tasks with stores have a directory to lock or anything to restore;
    `cancelled` says the task is closing, which gives up waiting."""

    def __init__(
        self,
        task_id: TaskId,
        stores: Mapping[str, TaskStore],
        services: TaskServices,
        cancelled: Callable[[], bool],
    ) -> None:
        self._task_id = task_id
        self._stores = stores
        self._services = services
        self._cancelled = cancelled
        self._dir_lock = TaskDirLock(services.state_dir / str(task_id)) if stores else None
        self._private_dir: Path | None = None
        self.restored_records = 0
        # While restoring: changelog records left per store (what the leader weighs).
        self._restore_left: dict[str, int] = {}
        self._restore_metrics = services.metrics.restore_listener()

    def restore_left(self) -> int | None:
        """Changelog records still to restore, None before the restore has counted."""
        return sum(self._restore_left.values()) if self._restore_left else None

    async def lock_state_dir(self) -> None:
        """Own the task directory before opening its files (state/task_dir_lock.py).

        Another worker sharing the data dir may still be closing this task: wait for
        it, up to `state_dir_lock_wait_s`. Past that, work without local state: the
        stores live in a private directory of this process, rebuilt from the
        changelog and deleted when the task closes.
        """
        lock = self._dir_lock
        if lock is None:
            return
        if lock.try_acquire():
            return
        wait_s = self._services.settings.state_dir_lock_wait_s
        log.info(
            "task %s waits up to %.0f s for %s to let go of %s",
            self._task_id,
            wait_s,
            lock.holder(),
            lock.task_dir,
        )
        if await acquire(lock, wait_s=wait_s, cancelled=self._cancelled):
            log.info("task %s: got its state directory", self._task_id)
            return
        if self._cancelled():
            return
        self._private_dir = private = (
            self._services.state_dir / ".private" / str(os.getpid()) / str(self._task_id)
        )
        shutil.rmtree(private, ignore_errors=True)
        for store in self._stores.values():
            store.sqlite.path = private / store.sqlite.path.name
        log.warning(
            "task %s: its state directory %s is still locked by %s after %.0f s; working "
            "without local state, from a private copy restored from the changelog",
            self._task_id,
            lock.task_dir,
            lock.holder(),
            wait_s,
        )

    async def restore(self) -> None:
        """Bring every store up to its changelog's end before the first record.

        A broker that is away (connection refused, timed out) is waited for: the
        restore starts again, from the checkpoints it reached, once it answers; one
        line says so when it begins waiting, one when it got through.
        """
        delay, waiting_since = RESTORE_RETRY_FIRST_S, None
        while True:
            try:
                await self._restore_once()
            except TransportError as exc:
                if self._cancelled():
                    raise
                if waiting_since is None:
                    waiting_since = asyncio.get_running_loop().time()
                    log.warning(
                        "task %s: restoring waits for the broker (%s); retrying until it answers",
                        self._task_id,
                        exc,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTORE_RETRY_MAX_S)
                continue
            if waiting_since is not None:
                log.info(
                    "task %s: restored after waiting %.0f s for the broker",
                    self._task_id,
                    asyncio.get_running_loop().time() - waiting_since,
                )
            return

    async def _restore_once(self) -> None:
        services = self._services
        reader = services.transport.reader()
        await reader.start()
        try:
            for store in self._stores.values():
                store.sqlite.open()
                began = asyncio.get_running_loop().time()
                # A KTable's topic past the committed offset is input still to process:
                # restoring it too would hand its records their own value as the old one.
                stop_at = None
                if store.table.changelog_is_source:
                    stop_at = await services.consumer.committed(store.changelog_tp) or 0
                name = store.table.name
                applied = await restore(
                    store,
                    reader,
                    max_records=services.settings.max_poll_records * 5,
                    cancelled=self._cancelled,
                    stop_at=stop_at,
                    task=self._task_id,
                    listeners=(self._restore_metrics, services.restore_listener),
                    progress=functools.partial(self._restore_left.__setitem__, name),
                )
                self.restored_records += applied
                log.info(
                    "task %s restored %d records of %s in %.3f s",
                    self._task_id,
                    applied,
                    store.table.name,
                    asyncio.get_running_loop().time() - began,
                )
        finally:
            await reader.stop()

    def release(self) -> None:
        """Close the stores' files and let go of the directory; a private one goes."""
        for store in self._stores.values():
            store.sqlite.close()
        if self._dir_lock is not None:
            self._dir_lock.release()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
