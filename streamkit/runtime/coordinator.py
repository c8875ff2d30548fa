"""The rebalance coordinator: maps assigned partitions to tasks, starts and stops them.

Partition p of every source topic of a sub-topology belongs to task `<sub>_p`, so
an assignment is turned into tasks by grouping; a revocation closes the tasks it
touches, each finishing its batch in hand and committing before it lets go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from ..errors import TransactionAborted
from ..topology import TaskId, Topology
from ..transport.base import TopicPartition
from .standby import StandbyTask
from .task import Task, TaskServices

log = logging.getLogger("streamkit.coordinator")


class Coordinator:
    def __init__(
        self,
        topology: Topology,
        services: TaskServices,
        on_task_failed: Callable[[BaseException], None],
        standby_assignment: Callable[[], Iterable[TaskId]] = lambda: (),
    ) -> None:
        self._topology = topology
        self._services = services
        self._on_task_failed = on_task_failed
        self._standby_assignment = standby_assignment
        self.tasks: dict[TaskId, Task] = {}
        self.standbys: dict[TaskId, StandbyTask] = {}
        self._jobs: dict[Task | StandbyTask, asyncio.Task[None]] = {}
        self._by_partition: dict[TopicPartition, Task] = {}
        self._assignment: set[TopicPartition] = set()
        self._revivals: set[asyncio.Task[None]] = set()
        # Set by close_all: a rebalance finishing during the shutdown starts nothing.
        self._closed = False
        # Assignments received: none yet means the worker has not joined its group.
        self.assignments = 0
        # When the rebalance in progress began (monotonic), for its duration's metric.
        self._rebalance_began: float | None = None

    def joining(self) -> None:
        """The worker is about to join the group: a rebalance begins."""
        self._rebalance_began = time.monotonic()

    def task_for(self, tp: TopicPartition) -> Task | None:
        return self._by_partition.get(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._closed:
            # The consumer finished a join it began before the worker was told to stop.
            log.info("not starting tasks of an assignment that came during the shutdown")
            return
        began = self._rebalance_began or time.monotonic()
        self._assignment = set(assigned)
        self.assignments += 1
        by_task: dict[TaskId, set[TopicPartition]] = defaultdict(set)
        for tp in assigned:
            by_task[self._topology.task_id_for(tp)].add(tp)
        await self._close(self.tasks.keys() - by_task.keys())
        # A standby that becomes active here stops first: both copies use the same files.
        await self._close_standbys(self.standbys.keys() & by_task.keys())
        for task_id, partitions in sorted(by_task.items()):
            if task_id in self.tasks:
                self.tasks[task_id].resume()
                continue
            self._add(task_id, partitions)
        log.info("owns tasks: %s", " ".join(str(t) for t in sorted(self.tasks)) or "none")
        await self._sync_standbys()
        self._rebalanced(began)

    async def _sync_standbys(self) -> None:
        wanted = {
            t
            for t in self._standby_assignment()
            if t not in self.tasks and self._topology.subtopology(t).tables
        }
        await self._close_standbys(self.standbys.keys() - wanted)
        for task_id in sorted(wanted - self.standbys.keys()):
            standby = StandbyTask(task_id, self._topology.subtopology(task_id), self._services)
            self.standbys[task_id] = standby
            self._start(standby)
        if self.standbys:
            log.info("standby tasks: %s", " ".join(str(t) for t in sorted(self.standbys)))

    def _add(self, task_id: TaskId, partitions: set[TopicPartition]) -> None:
        task = Task(task_id, self._topology.subtopology(task_id), partitions, self._services)
        self.tasks[task_id] = task
        for tp in partitions:
            self._by_partition[tp] = task
        self._start(task)

    def _start(self, runnable: Task | StandbyTask) -> None:
        job = asyncio.create_task(runnable.run(), name=f"{type(runnable).__name__} {runnable.id}")
        job.add_done_callback(lambda job: self._task_ended(runnable, job))
        self._jobs[runnable] = job

    def lags(self) -> dict[TaskId, int]:
        """Standbys, and tasks still restoring, that know how far behind their copy
        is: what the leader weighs against the checkpoints."""
        lags = {t: lag for t, s in self.standbys.items() if (lag := s.lag) is not None}
        for t, task in self.tasks.items():
            if (lag := task.restore_lag) is not None:
                lags[t] = lag
        return lags

    def _rebalanced(self, began: float) -> None:
        self._services.metrics.rebalance_seconds.observe(time.monotonic() - began)
        self._rebalance_began = None

    def owned_tasks(self) -> list[TaskId]:
        """Tasks this worker holds, running or suspended: what it tells the assignor."""
        return sorted(self.tasks)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Suspend, not close: with eager rebalancing most tasks come straight back."""
        if self._closed:
            return
        self._rebalance_began = time.monotonic()
        touched = {t for tp in revoked if (t := self._by_partition.get(tp)) is not None}
        await asyncio.gather(*(t.suspend() for t in touched))

    async def close_all(self) -> None:
        """Close every task and standby, and take no assignment after (a shutdown)."""
        self._closed = True
        for revival in self._revivals:
            revival.cancel()
        await self._close(set(self.tasks))
        await self._close_standbys(set(self.standbys))

    async def _close(self, task_ids: Iterable[TaskId]) -> None:
        tasks = [self.tasks.pop(t) for t in task_ids]
        await self._stop(tasks)
        for task in tasks:
            for tp in task.partitions:
                self._by_partition.pop(tp, None)

    async def _close_standbys(self, task_ids: Iterable[TaskId]) -> None:
        await self._stop([self.standbys.pop(t) for t in task_ids])

    async def _stop(self, runnables: Sequence[Task | StandbyTask]) -> None:
        for runnable in runnables:
            runnable.request_stop()
        try:
            await asyncio.gather(*(self._jobs[r] for r in runnables), return_exceptions=True)
        finally:
            for runnable in runnables:
                self._jobs.pop(runnable, None)

    def unfinished(self) -> list[str]:
        """Tasks and standbys whose coroutine has not ended yet, sorted."""
        return sorted(str(r.id) for r, job in self._jobs.items() if not job.done())

    def has_queued_records(self) -> bool:
        return any(t.has_queued() for t in self.tasks.values())

    def _task_ended(self, runnable: Task | StandbyTask, job: asyncio.Task[None]) -> None:
        exc = None if job.cancelled() else job.exception()
        if not isinstance(runnable, Task) or self.tasks.get(runnable.id) is not runnable:
            if exc is not None:
                self._on_task_failed(exc)
            return  # closed by a rebalance or a shutdown, which awaits it
        if runnable.fenced:
            self._drop(runnable)
        elif isinstance(exc, TransactionAborted):
            log.warning("task %s: %s; it starts again from its committed offsets", runnable.id, exc)
            self._drop(runnable)
            revival = asyncio.create_task(self._revive(runnable), name=f"revive {runnable.id}")
            self._revivals.add(revival)
            revival.add_done_callback(self._revivals.discard)
        elif exc is not None:
            self._on_task_failed(exc)

    def _drop(self, task: Task) -> None:
        """Forget a task that ended by itself; its partitions wait, paused, for the
        next owner (this worker again after a revival or a rebalance)."""
        del self.tasks[task.id]
        self._jobs.pop(task, None)
        consumer = self._services.consumer
        for tp in task.partitions:
            self._by_partition.pop(tp, None)
            consumer.pause(tp)

    async def _revive(self, dead: Task) -> None:
        """Start a task again after an aborted transaction: a new instance restores
        its stores (their files hold only committed state) and the consumer reads
        again from the committed offsets, so the aborted work is redone once."""
        consumer = self._services.consumer
        positions = {tp: await consumer.committed(tp) for tp in dead.partitions}
        if self._closed or dead.id in self.tasks or not dead.partitions <= self._assignment:
            return  # a rebalance moved on meanwhile and decided for it
        for tp, committed in positions.items():
            consumer.seek(tp, committed or 0)
            consumer.resume(tp)
        self._add(dead.id, set(dead.partitions))
