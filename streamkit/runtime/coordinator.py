"""The rebalance coordinator: maps assigned partitions to tasks, starts and stops them.

Partition p of every source topic of a sub-topology belongs to task `<sub>_p`, so
an assignment is turned into tasks by grouping; a revocation closes the tasks it
touches, each finishing its batch in hand and committing before it lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from ..errors import CommitRejected, TransactionAborted, TransportError
from ..topology import TaskId, Topology
from ..transport.base import TopicPartition
from .standby import StandbyTask
from .task import Task, TaskServices

log = logging.getLogger("streamkit.coordinator")

# A revival that finds the broker away tries again after this, doubling up to the max.
REVIVE_RETRY_FIRST_S = 0.5
REVIVE_RETRY_MAX_S = 10.0


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
        self._closing = asyncio.Event()  # wakes revivals that wait for the broker
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
        self._closing.set()
        # A revival ends by itself once it sees `_closed`. Cancelled in the middle of
        # its commit, it would leave aiokafka's inner commit task unretrieved (a
        # traceback in the log); the shutdown's deadline bounds the wait.
        await asyncio.gather(*self._revivals, return_exceptions=True)
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
            self._start_revival(runnable)
        elif isinstance(exc, TransactionAborted):
            log.warning("task %s: %s; it starts again from its committed offsets", runnable.id, exc)
            self._drop(runnable)
            self._start_revival(runnable)
        elif exc is not None:
            self._on_task_failed(exc)

    def _start_revival(self, dead: Task) -> None:
        revival = asyncio.create_task(self._revive(dead), name=f"revive {dead.id}")
        self._revivals.add(revival)
        revival.add_done_callback(self._revivals.discard)

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
        its stores (their files hold only committed state) and reads its input again
        from the committed offsets, so the aborted work is redone once.

        Only if the group still gives its partitions to this worker. A fenced task
        was fenced by a new owner (this worker's session expired: it is a zombie) or
        by the broker (it aborted a transaction that outlived
        `transaction_timeout_ms`, and bumped the epoch), and only the group can tell
        which: it refuses a commit once the partitions moved on. A new producer for
        a task that moved would fence its new owner in turn.

        A broker that is away is waited for, as a restore waits for it.
        """
        delay = REVIVE_RETRY_FIRST_S
        while True:
            try:
                await self._revive_once(dead)
                return
            except CommitRejected as exc:
                log.info(
                    "task %s is not started again (%s): the next rebalance decides", dead.id, exc
                )
                return
            except TransportError as exc:
                if self._closed:
                    return
                log.warning(
                    "task %s: starting it again waits for the broker (%s); retrying in %.1f s",
                    dead.id,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, REVIVE_RETRY_MAX_S)

    async def _revive_once(self, dead: Task) -> None:
        consumer = self._services.consumer
        # Where to start again: the committed offset, or where the dead instance
        # began to read a partition that has none yet.
        began = dead.first_fetched()
        positions = {}
        for tp in sorted(dead.partitions):
            committed = await consumer.committed(tp)
            start = began.get(tp) if committed is None else committed
            if start is not None:
                positions[tp] = start
        if self._closed or dead.id in self.tasks or not dead.partitions <= self._assignment:
            return  # a rebalance moved on meanwhile and decided for it
        # An empty commit asks the group nothing: such a task read nothing yet.
        if not positions:
            raise CommitRejected("nothing read and nothing committed to ask the group with")
        await consumer.commit(positions)
        if self._closed or dead.id in self.tasks or not dead.partitions <= self._assignment:
            return
        if dead.fenced:
            log.warning(
                "task %s: the group still gives its partitions to this worker (the broker "
                "aborted a transaction that outlived transaction_timeout_ms, say): it starts "
                "again from its committed offsets",
                dead.id,
            )
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        # The new instance reads the committed offsets again once it fenced (Task.open).
        self._add(dead.id, set(dead.partitions))
