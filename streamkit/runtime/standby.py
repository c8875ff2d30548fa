"""A standby task: a warm copy of a task that runs on another worker.

It keeps the task's SQLite files up to date by tailing their changelogs, so that if
the active copy's worker fails and the task comes here, the restore replays only
the tail. It reads no input and writes nothing to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from ..events import StreamTime
from ..state.restore import restore
from ..state.task_dir_lock import TaskDirLock, acquire
from ..state.task_store import TaskStore, task_stores
from ..topology import SubTopology, TaskId
from ..transport.base import PartitionReader
from .task import TaskServices

log = logging.getLogger("streamkit.standby")

POLL_WHEN_CAUGHT_UP_S = 0.5
# A copy counts as caught up for this long after it last reached the changelog's end.
CAUGHT_UP_FRESH_S = 4 * POLL_WHEN_CAUGHT_UP_S


class StandbyTask:
    def __init__(self, task_id: TaskId, subtopology: SubTopology, services: TaskServices) -> None:
        self.id = task_id
        self._services = services
        # A standby processes no records: its stream time stays unknown, so it keeps
        # every window until it becomes active.
        self._stores = task_stores(task_id, subtopology, services.state_dir, StreamTime())
        self._closing = asyncio.Event()
        self._dir_lock = TaskDirLock(services.state_dir / str(task_id))
        self._lag_metrics = services.metrics.restore_listener(standby=True)
        # Whether the copy's files are open and followed (queries may read them).
        self._keeping_up = False
        # When (monotonic) it last reached the end of every changelog.
        self._caught_up_at: float | None = None

    @property
    def lag(self) -> int | None:
        """0 when it reached the changelogs' ends a moment ago; None when not known
        (still restoring, or behind since): the leader then compares checkpoints."""
        at = self._caught_up_at
        return 0 if at is not None and time.monotonic() - at <= CAUGHT_UP_FRESH_S else None

    def request_stop(self) -> None:
        self._closing.set()

    def readable_stores(self) -> Mapping[str, TaskStore]:
        """The copy's stores while it keeps them up to date; none before or after."""
        return self._stores if self._keeping_up else {}

    async def run(self) -> None:
        # A warm copy is worth nothing beside the active one: wait for as long as it takes.
        if not self._dir_lock.try_acquire():
            log.info(
                "standby %s waits for %s to let go of %s",
                self.id,
                self._dir_lock.holder(),
                self._dir_lock.task_dir,
            )
            if not await acquire(self._dir_lock, wait_s=None, cancelled=self._closing.is_set):
                return
        try:
            await self._keep_up()
        finally:
            self._dir_lock.release()

    async def _keep_up(self) -> None:
        reader = self._services.transport.reader()
        await reader.start()
        lag = self._services.metrics.standby_lag
        try:
            for name, store in self._stores.items():
                store.sqlite.open()
                lag.labels(str(self.id), name).set(0)  # until a pass finds it behind
            self._keeping_up = True
            while not self._closing.is_set():
                # A fetch may wait a second for records; a task taking this copy over
                # (a warm-up's hand-over) must not: stop at once, between two applied
                # batches (each is written with its checkpoint in one transaction).
                catching_up = asyncio.ensure_future(self._catch_up(reader))
                closing = asyncio.ensure_future(self._closing.wait())
                try:
                    await asyncio.wait((catching_up, closing), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                if not catching_up.done():
                    catching_up.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await catching_up
                    break
                applied = catching_up.result()
                # restore() returns once its position has reached the end it knows.
                self._caught_up_at = time.monotonic()
                if not applied:
                    try:
                        async with asyncio.timeout(POLL_WHEN_CAUGHT_UP_S):
                            await self._closing.wait()
                    except TimeoutError:
                        pass
        finally:
            self._keeping_up = False
            await reader.stop()
            for name, store in self._stores.items():
                store.sqlite.close()
                with contextlib.suppress(KeyError):  # a standby that ends has no lag
                    lag.remove(str(self.id), name)

    async def _catch_up(self, reader: PartitionReader) -> int:
        """Every store to its changelog's end; the records applied."""
        applied = 0
        for store in self._stores.values():
            applied += await restore(
                store,
                reader,
                max_records=self._services.settings.max_poll_records * 5,
                cancelled=self._closing.is_set,
                task=self.id,
                listeners=(self._lag_metrics,),
            )
        return applied
