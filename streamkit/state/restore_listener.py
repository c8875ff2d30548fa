"""The hook a user gives to watch (or hold) the restores of a worker's task stores.

Kafka Streams' StateRestoreListener, with coroutines: a restore awaits each call
before it reads on, so a listener can report progress to a dashboard, or a test
can keep a restore going while it arranges a rebalance around it. Standby tasks and
global tables do not call it: they never end, so "restore end" means nothing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..topology import TaskId
    from ..transport.base import TopicPartition


class RestoreListener:
    """Subclass and override what you need; every method is a no-op here."""

    async def on_restore_start(
        self,
        task: TaskId,
        store: str,
        changelog: TopicPartition,
        start_offset: int,
        end_offset: int,
    ) -> None:
        """A store of `task` begins replaying `changelog` from `start_offset` to `end_offset`."""

    async def on_batch_restored(
        self, task: TaskId, store: str, changelog: TopicPartition, batch_end_offset: int, count: int
    ) -> None:
        """`count` records were applied; the store now reflects the log up to `batch_end_offset`."""

    async def on_restore_end(
        self, task: TaskId, store: str, changelog: TopicPartition, total_restored: int
    ) -> None:
        """The store is up to date (or its task was asked to stop while restoring)."""
