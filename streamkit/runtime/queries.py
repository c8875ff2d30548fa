"""Interactive queries, this worker's side: where a key lives, and reading it here.

A table's key lives in one task: the one of the key's partition (by the partitioner
of the topic the table is sharded like, murmur2 unless it declares another) in the
table's sub-topology. The group leader tells every worker which endpoint runs
which task (runtime/assignor.py); `LocalState` answers for the tasks, standby
copies and global tables of this worker, and says where the others are.

Reads are synchronous reads of a task's store made between two of the task's
awaits: they see what the task's agents see, changes since the last commit
included, and write nothing. A task that is restoring, or suspended by a
rebalance, is not read (NotAvailable); a standby copy is read only when the
caller accepts stale state, with its lag in changelog records (KIP-535).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadQuery, NotAvailable, StateError, UnknownTable
from ..partitioner import MURMUR2, Partitioner
from ..serde import Serde
from ..state.table import Table
from ..state.windowed import WindowedTable
from ..topology import TaskId, Topology
from .assignor import MemberInfo
from .task import TaskState

if TYPE_CHECKING:
    from ..dsl.global_table import GlobalKTable
    from ..state.task_store import TaskStore
    from .coordinator import Coordinator

_ABSENT: Any = object()
# How long a caller is told to wait while a task restores or a rebalance moves it.
RETRY_AFTER_S = 1.0

Row = tuple[bytes, Any]  # serialized key, value as the store holds it


@dataclass(frozen=True)
class Target:
    """A queryable table: a task-sharded one, or a global one (`subtopology` None)."""

    name: str
    table: Table | GlobalKTable
    subtopology: int | None
    # Keys as users give them (a windowed table's: without their window).
    key_serde: Serde[Any]
    key_type: Any
    # Values as the store holds them (ValueAndTimestamp for timestamped tables).
    value_serde: Serde[Any]
    partitions: int
    partitioner: Partitioner = MURMUR2

    @property
    def store_key_serde(self) -> Serde[Any]:
        """Keys as the store holds them (a windowed table's: with their window)."""
        table = self.table
        return table.changelog.key_serde if isinstance(table, Table) else table.topic.key_serde

    @property
    def windowed(self) -> bool:
        return isinstance(self.table, WindowedTable)

    @property
    def timestamped(self) -> bool:
        return isinstance(self.table, Table) and self.table.timestamped

    def task_of(self, key_bytes: bytes) -> TaskId:
        assert self.subtopology is not None
        return TaskId(self.subtopology, self.partitioner.of(key_bytes, self.partitions))

    def tasks(self) -> list[TaskId]:
        assert self.subtopology is not None
        return [TaskId(self.subtopology, p) for p in range(self.partitions)]


@dataclass(frozen=True)
class Read:
    """A key read here: `value` as the store holds it, `_ABSENT`-free (found says)."""

    found: bool
    value: Any
    task: TaskId | None
    lag: int = 0
    stale: bool = False


def targets(topology: Topology, global_tables: Iterable[GlobalKTable]) -> dict[str, Target]:
    """Every table the topology runs, and every global table, by name."""
    out: dict[str, Target] = {}
    for sub in topology.subtopologies:
        for table in sub.tables:
            key_serde = (
                table.inner_key_serde
                if isinstance(table, WindowedTable)
                else table.changelog.key_serde
            )
            out[table.name] = Target(
                table.name,
                table,
                sub.id,
                key_serde,
                table.changelog.key_type,
                table.value_serde,
                table.changelog.partitions,
                (table.partitioned_by or table.changelog).partitioner,
            )
    for g in global_tables:
        topic = g.topic
        out[g.name] = Target(
            g.name, g, None, topic.key_serde, topic.key_type, topic.value_serde, topic.partitions
        )
    return out


class LocalState:
    """This worker's share of the app's state, and the map of who holds the rest."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        coordinator: Coordinator,
        assignment: Callable[[], MemberInfo],
    ) -> None:
        self.targets = targets
        self._coordinator = coordinator
        self._assignment = assignment

    def target(self, name: str) -> Target:
        target = self.targets.get(name)
        if target is None:
            raise UnknownTable(
                f"no table {name!r}: this app's tables are "
                f"{', '.join(sorted(self.targets)) or 'none'} (a table no agent or stream "
                "uses is not run, so not queryable)"
            )
        return target

    # Who holds what -----------------------------------------------------------

    def runs(self, task: TaskId) -> bool:
        """Whether this worker holds the task's active copy (in any state)."""
        return task in self._coordinator.tasks

    def keeps_standby(self, task: TaskId) -> bool:
        standby = self._coordinator.standbys.get(task)
        return standby is not None and bool(standby.readable_stores())

    def owner(self, task: TaskId) -> str | None:
        """The endpoint of the worker running the task, as of the last assignment."""
        return next((h for h, ts in self._assignment().hosts.items() if task in ts), None)

    def endpoints(self) -> list[str]:
        """Every worker that serves queries and runs tasks, as of the last assignment."""
        return sorted(self._assignment().hosts)

    def standby_hosts(self, task: TaskId) -> list[str]:
        return sorted(h for h, ts in self._assignment().standby_hosts.items() if task in ts)

    # Reads ----------------------------------------------------------------------

    async def get(self, target: Target, key_bytes: bytes, *, stale_ok: bool = False) -> Read:
        """One key, from this worker's copy: its global table, its active task, or
        (stale_ok) its standby copy."""
        if target.subtopology is None:
            store = self._global_store(target)
            raw = store.sqlite.get(key_bytes)
            value = None if raw is None else target.value_serde.deserialize(raw)
            return Read(raw is not None, value, None)
        if target.windowed:
            raise BadQuery(
                f"table {target.name!r} is windowed: ask for a key's windows "
                f"(/tables/{target.name}/KEY/windows, app.query_windows)"
            )
        task = target.task_of(key_bytes)
        store, lag, stale = await self._store(target, task, stale_ok)
        key = store.table.changelog.key_serde.deserialize(key_bytes)
        value = store.get(key, _ABSENT, remember=False)
        found = value is not _ABSENT
        return Read(found, value if found else None, task, lag, stale)

    async def scan(
        self,
        target: Target,
        tasks: Iterable[TaskId],
        low: bytes | None,
        high: bytes | None,
        limit: int,
        *,
        stale_ok: bool = False,
    ) -> list[Row]:
        """Keys in [low, high) of the given tasks (all of a global table), merged in
        byte order; the first `limit`."""
        if target.subtopology is None:
            store = self._global_store(target)
            deserialize = target.value_serde.deserialize
            return [(k, deserialize(v)) for k, v in store.sqlite.range(low, high, 0, limit)]
        pages = []
        for task in tasks:
            store, _, _ = await self._store(target, task, stale_ok)
            pages.append(store.scan(low, high, limit))
        return list(islice(heapq.merge(*pages, key=lambda row: row[0]), limit))

    async def windows(
        self, target: Target, key_bytes: bytes, time_from: int, time_to: int, *, stale_ok: bool
    ) -> tuple[list[tuple[int, int, Any]], Read]:
        """(start, end, value) of the key's windows starting in [time_from, time_to]."""
        if not target.windowed:
            raise BadQuery(f"table {target.name!r} is not a windowed table")
        task = target.task_of(key_bytes)
        store, lag, stale = await self._store(target, task, stale_ok)
        key = target.key_serde.deserialize(key_bytes)
        rows = store.range((key, time_from, 0), (key, time_to + 1, 0))
        found = [(window[1], window[2], value) for window, value in rows]
        return found, Read(bool(found), None, task, lag, stale)

    async def _store(
        self, target: Target, task: TaskId, stale_ok: bool
    ) -> tuple[TaskStore, int, bool]:
        """The task's store here, its lag, and whether the copy is stale: a restoring
        active task or a standby, read only when the caller accepts that."""
        active = self._coordinator.tasks.get(task)
        if active is not None and active.state is TaskState.RUNNING:
            return active.stores()[target.name], 0, False
        if stale_ok:
            stores: Mapping[str, TaskStore] = {}
            if active is not None and active.state is TaskState.RESTORING:
                stores = active.stores()
            elif (standby := self._coordinator.standbys.get(task)) is not None:
                stores = standby.readable_stores()
            store = stores.get(target.name)
            if store is not None and store.sqlite.is_open:
                return store, store.lag(), True
        if active is not None:
            raise NotAvailable(
                f"task {task} of table {target.name!r} is {active.state} here; ask again "
                "once it runs (or accept stale state: stale_ok)",
                retry_after_s=RETRY_AFTER_S,
            )
        raise NotAvailable(
            f"task {task} of table {target.name!r} is not on this worker (a rebalance may "
            "be moving it)",
            retry_after_s=RETRY_AFTER_S,
        )

    def _global_store(self, target: Target) -> Any:
        table = target.table
        assert not isinstance(table, Table)
        try:
            return table.store
        except StateError as exc:
            raise NotAvailable(str(exc), retry_after_s=RETRY_AFTER_S) from None

    def state_files(self, target: Target) -> list[tuple[str, Path]]:
        """(task, SQLite file) of the table's copies running here (SQL reads them)."""
        if target.subtopology is None:
            return [("global", self._global_store(target).sqlite.path)]
        return [
            (str(task_id), task.stores()[target.name].sqlite.path)
            for task_id, task in sorted(self._coordinator.tasks.items())
            if task_id.subtopology == target.subtopology and task.state is TaskState.RUNNING
        ]

    # Health -----------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready: the group joined, and every task this worker owns restored and running."""
        coordinator = self._coordinator
        tasks = {str(t): str(task.state) for t, task in sorted(coordinator.tasks.items())}
        joined = coordinator.assignments > 0
        running = all(s == TaskState.RUNNING for s in tasks.values())
        return joined and running, tasks
