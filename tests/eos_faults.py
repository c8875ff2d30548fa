"""Faults for exactly-once on memory://, in one process: workers that crash at a chosen
step of a commit, transactions the broker aborts, zombies that wake up.

The in-process counterpart of `make chaos CHAOS_ARGS=--exactly-once`, which cannot
pass on the test broker (docs/processing-guarantees.md). A crash here is a crash:
the worker's coroutines stop where they are and never run again (no commit, no
close, no `finally`), its transactions stay open and its files as they are. What the
kernel does for a dead process (let go of its file locks and files) and what the
group does (expire its session), the harness does. `FaultLoop` makes that possible
in one process: a callback belongs to the worker whose context scheduled it (the
context variable WORKER, set where a worker starts and inherited by every asyncio
task it creates), and a dead worker's callbacks are dropped.

The crash points are streamkit's own functions, wrapped by `Faults`: the steps of
`Task.commit`, a task's runners in the middle of a batch, a store's restore, the
state files written store by store, or wherever the worker happens to wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from helpers import table_in_files, wait_for

import streamkit as sk
from chaos.app import ChaosApp, Click, build
from chaos.check import Verdict, check, read_windows
from streamkit.errors import TransactionAborted
from streamkit.events import Event
from streamkit.runtime.agent_runner import AgentRunner
from streamkit.runtime.graph_runner import GraphRunner
from streamkit.runtime.worker import Worker
from streamkit.state.restore_listener import RestoreListener
from streamkit.state.sqlite_store import SqliteStore
from streamkit.state.task_dir_lock import TaskDirLock
from streamkit.state.task_store import TaskStore
from streamkit.topology import TaskId
from streamkit.transport.base import TopicPartition
from streamkit.transport.memory import MemoryBroker, MemoryTransactionalProducer

WORKER: contextvars.ContextVar[str | None] = contextvars.ContextVar("eos_worker", default=None)

GROUP = "chaos"
PARTITIONS = 4
USERS = 8
TRANSACTION_TIMEOUT_S = 60.0
INPUTS = ("chaos-clicks", "chaos-profiles")
DELAY_S = 0.3  # three commit intervals


class Crashed(BaseException):
    """Unwinds a worker that died in synchronous code: nothing it does after counts."""


class FaultLoop(asyncio.SelectorEventLoop):
    """An event loop on which a worker can die: its callbacks are never run again."""

    def __init__(self) -> None:
        super().__init__()
        self.dead: set[str] = set()
        # Every task of a worker, with its context; a dead worker's are held, so that
        # the garbage collector never closes their coroutines (running their `finally`).
        self._tasks: defaultdict[str, list[tuple[asyncio.Task[Any], contextvars.Context]]] = (
            defaultdict(list)
        )

    def kill(self, worker: str) -> None:
        self.dead.add(worker)

    @staticmethod
    def _owner(context: contextvars.Context | None) -> str | None:
        return WORKER.get() if context is None else context.get(WORKER)

    def create_task(
        self, coro: Any, *, name: str | None = None, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        context = contextvars.copy_context() if context is None else context
        task = super().create_task(coro, name=name, context=context)
        owner = context.get(WORKER)
        if owner is not None:
            tasks = self._tasks[owner]
            tasks[:] = [(t, c) for t, c in tasks if not t.done()]
            tasks.append((task, context))
        return task

    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        owner = self._owner(context)
        if owner is None:
            return super().call_soon(callback, *args, context=context)
        return super().call_soon(self._unless_dead, owner, callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        owner = self._owner(context)
        if owner is None:
            return super().call_at(when, callback, *args, context=context)
        return super().call_at(when, self._unless_dead, owner, callback, *args, context=context)

    def _unless_dead(self, owner: str, callback: Callable[..., object], *args: Any) -> None:
        if owner not in self.dead:
            callback(*args)

    def bury(self) -> None:
        """After the checks: close the dead workers' coroutines in their own context,
        where the state files refuse them (`Crashed`), so their `finally` writes nothing."""
        for worker in self.dead:
            for task, context in self._tasks.pop(worker, []):
                if task.done():
                    if not task.cancelled():
                        task.exception()  # retrieved: no "never retrieved" at collection
                    continue
                task._log_destroy_pending = False  # type: ignore[attr-defined]
                with contextlib.suppress(BaseException):
                    context.run(task.get_coro().close)

    async def stop_the_living(self) -> None:
        """Cancel what still runs (after a failure), and wait a little for it."""
        me = asyncio.current_task()
        living = [
            task
            for worker, tasks in self._tasks.items()
            if worker not in self.dead
            for task, _ in tasks
            if not task.done()
        ] + [t for t in asyncio.all_tasks(self) if t is not me and self._owner_of(t) is None]
        for task in living:
            task.cancel()
        if living:
            await asyncio.wait(living, timeout=5)

    def _owner_of(self, task: asyncio.Task[Any]) -> str | None:
        for worker, tasks in self._tasks.items():
            if any(t is task for t, _ in tasks):
                return worker
        return None


class Point(StrEnum):
    """Where a trap springs, in a worker's path."""

    MID_BATCH = "mid-batch"  # some of the task's runners took the batch, the rest not
    BEFORE_TXN_COMMIT = "before-txn-commit"  # Task.commit step 1 done: changelogs and
    # outputs in the open transaction
    AFTER_TXN_COMMIT = "after-txn-commit"  # steps 2 + 4 done, step 3 not: the state files
    # and the staged cache know nothing of the transaction
    STATE_FILES = "state-files"  # step 3 half done: some stores' files written, not all
    RESTORE = "restore"  # a store part-way through its restore
    PRODUCER_INIT = "producer-init"  # a task's producer registering its transactional id
    ANYWHERE = "anywhere"  # wherever the worker waits when the harness kills it


class Action(StrEnum):
    CRASH = "crash"  # the worker dies there
    ABORT = "abort"  # the broker refuses the commit: the transaction aborts
    TIMEOUT = "timeout"  # the task hangs there past the transaction timeout
    DELAY = "delay"  # every task of the worker is slow there (a slow broker), for a while
    HOLD = "hold"  # every task of the worker stops there until released (frozen)


@dataclass
class Trap:
    worker: str
    point: Point
    action: Action = Action.CRASH
    skip: int = 0  # passes through the point before it springs
    sprung: asyncio.Event = field(default_factory=asyncio.Event)
    where: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)  # HOLD
    held: set[str] = field(default_factory=set)  # HOLD: the transactional ids it held


class Faults:
    """Traps armed in workers, and the wrappers of streamkit's functions that spring them."""

    def __init__(self, loop: FaultLoop, broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch):
        self.loop = loop
        self.broker = broker
        self._traps: dict[str, Trap] = {}
        self._locks: defaultdict[str, list[TaskDirLock]] = defaultdict(list)
        self._files: defaultdict[str, list[SqliteStore]] = defaultdict(list)
        self._clock_skew = 0.0
        broker.transactions.clock = lambda: time.monotonic() + self._clock_skew
        self._install(monkeypatch)

    def arm(self, trap: Trap) -> Trap:
        self._traps[trap.worker] = trap
        return trap

    def disarm(self, worker: str) -> None:
        self._traps.pop(worker, None)

    def kill(self, worker: str) -> None:
        """The worker dies; the kernel lets go of its file locks and files."""
        self.loop.kill(worker)
        for lock in self._locks.pop(worker, []):
            lock.release()
        for store in self._files.pop(worker, []):
            store.close()

    def _springs(self, point: Point, where: str = "") -> Trap | None:
        worker = WORKER.get()
        trap = None if worker is None else self._traps.get(worker)
        if trap is None or trap.point is not point:
            return None
        if trap.skip:
            trap.skip -= 1
            return None
        if trap.action not in (Action.DELAY, Action.HOLD):
            del self._traps[trap.worker]
        trap.where = where
        trap.sprung.set()
        return trap

    async def _spring(self, trap: Trap, producer: MemoryTransactionalProducer | None) -> None:
        if trap.action is Action.CRASH:
            self.kill(trap.worker)
            await asyncio.get_running_loop().create_future()  # never resolved: dead
        if trap.action is Action.DELAY:
            await asyncio.sleep(DELAY_S)
            return
        assert producer is not None
        if trap.action is Action.HOLD:
            trap.held.add(producer.transactional_id)
            await trap.released.wait()
            return
        if trap.action is Action.ABORT:
            await producer.abort()
            raise TransactionAborted("injected: the broker refused the commit")
        # TIMEOUT: the broker's clock passes the timeout of every open transaction.
        self._clock_skew += TRANSACTION_TIMEOUT_S + 1
        self.broker.transactions.expire()

    def _install(self, mp: pytest.MonkeyPatch) -> None:
        faults = self
        commit = MemoryTransactionalProducer.commit

        async def txn_commit(
            producer: MemoryTransactionalProducer,
            offsets: Mapping[TopicPartition, int],
            group_id: str,
        ) -> Mapping[TopicPartition, int]:
            where = producer.transactional_id
            if trap := faults._springs(Point.BEFORE_TXN_COMMIT, where):
                await faults._spring(trap, producer)
            acked = await commit(producer, offsets, group_id)
            if trap := faults._springs(Point.AFTER_TXN_COMMIT, where):
                await faults._spring(trap, producer)
            return acked

        mp.setattr(MemoryTransactionalProducer, "commit", txn_commit)

        init = MemoryTransactionalProducer.start

        async def slow_init(producer: MemoryTransactionalProducer) -> None:
            if trap := faults._springs(Point.PRODUCER_INIT, producer.transactional_id):
                await faults._spring(trap, producer)
            await init(producer)

        mp.setattr(MemoryTransactionalProducer, "start", slow_init)

        for runner in (AgentRunner, GraphRunner):
            process = runner.process

            async def mid_batch(self: Any, batch: Sequence[Event], process: Any = process) -> None:
                if trap := faults._springs(Point.MID_BATCH, f"{type(self).__name__}"):
                    await faults._spring(trap, None)
                await process(self, batch)

            mp.setattr(runner, "process", mid_batch)

        async def batch_restored(
            self: RestoreListener,
            task: TaskId,
            store: str,
            changelog: TopicPartition,
            batch_end_offset: int,
            count: int,
        ) -> None:
            if trap := faults._springs(Point.RESTORE, f"{task} {store} at {batch_end_offset}"):
                await faults._spring(trap, None)

        mp.setattr(RestoreListener, "on_batch_restored", batch_restored)

        write_staged = TaskStore.write_staged

        def write_staged_or_die(store: TaskStore) -> None:
            # Only a store with staged changes counts: the crash falls between two
            # stores' files of one write, or before the first.
            if store.staged_count():
                trap = faults._springs(Point.STATE_FILES, f"{store.sqlite.path}")
                if trap is not None:
                    faults.kill(trap.worker)
            worker = WORKER.get()
            if worker in faults.loop.dead:
                raise Crashed(worker)  # and its unwinding writes nothing either
            write_staged(store)

        mp.setattr(TaskStore, "write_staged", write_staged_or_die)

        try_acquire = TaskDirLock.try_acquire

        def acquire(lock: TaskDirLock) -> bool:
            got = try_acquire(lock)
            worker = WORKER.get()
            if got and worker is not None:
                faults._locks[worker].append(lock)
            return got

        mp.setattr(TaskDirLock, "try_acquire", acquire)

        open_store = SqliteStore.open

        def opened(store: SqliteStore) -> bool:
            readable = open_store(store)
            worker = WORKER.get()
            if worker is not None:
                faults._files[worker].append(store)
            return readable

        mp.setattr(SqliteStore, "open", opened)


@dataclass
class Running:
    name: str
    machine: Path
    chaos: ChaosApp
    worker: Worker
    job: asyncio.Task[None]


FAULTS: tuple[str, ...] = (
    *(f"crash:{p}" for p in Point),
    "timeout",
    "abort",
    "zombie:commits-before-the-fence",
    "zombie:fenced",
)


class EosRun:
    """One run: workers on two machines (data dirs), input fed throughout, faults in turn."""

    def __init__(self, url: str, tmp_path: Path, faults: Faults, rng: random.Random) -> None:
        self.url = url
        self.faults = faults
        self.broker = faults.broker
        self.rng = rng
        self.machines = (tmp_path / "a", tmp_path / "b")
        self.started = time.monotonic()
        self.log: list[str] = []
        self.current: Running | None = None
        self.dead: list[Running] = []  # held: their objects stay as they died
        self.sprung: list[Trap] = []
        self._names = iter(range(1, 1_000))
        self._feeder: asyncio.Task[None] | None = None
        self.produced = 0
        self.table_in_files: dict[Any, Any] = {}  # the last worker's, once it stopped

    def note(self, line: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:6.2f} s  {line}")

    def app(self, data_dir: Path | None = None) -> ChaosApp:
        settings: dict[str, Any] = {
            "broker": self.url,
            "processing_guarantee": "exactly_once",
            "max_poll_records": 20,  # restores of 100 records a batch: several per store
            "gc_young_threshold": 0,  # a dead worker would never set it back
            "shutdown_timeout_s": 5.0,
            "state_dir_lock_wait_s": 2.0,
        }
        if data_dir is not None:
            settings["data_dir"] = data_dir
        return build(sk.App(GROUP, **settings), partitions=PARTITIONS, window_s=1.0, grace_s=0.5)

    def start(
        self, machine: Path, trap: Point | None = None, action: Action = Action.CRASH, skip: int = 0
    ) -> Running:
        name = f"w{next(self._names)}"
        chaos = self.app(machine)
        worker = Worker(chaos.app)
        if trap is not None:
            self.sprung.append(self.faults.arm(Trap(name, trap, action, skip=skip)))

        # Every task the worker creates inherits this context, and with it its name.
        context = contextvars.copy_context()
        context.run(WORKER.set, name)
        job = asyncio.get_running_loop().create_task(worker.run(), name=name, context=context)
        self.current = running = Running(name, machine, chaos, worker, job)
        self.note(f"{name} starts on {machine.name}")
        return running

    # input ---------------------------------------------------------------------------

    async def feed(self, chaos: ChaosApp) -> None:
        """Clicks at about 300 a second, stamped with the wall clock, each with its id."""
        async with chaos.app.producer() as producer:
            while True:
                now_ms = int(time.time() * 1000)
                batch = []
                for _ in range(6):
                    user = f"user{self.produced % USERS}"
                    batch.append((user, Click(id=self.produced, user=user), now_ms))
                    self.produced += 1
                await producer.send_many(chaos.clicks, batch)
                await asyncio.sleep(0.02)

    def _input_ends(self) -> dict[TopicPartition, int]:
        tps = (TopicPartition(t, p) for t in INPUTS for p in range(PARTITIONS))
        return {tp: self.broker.end_offset(tp) for tp in tps}

    async def caught_up(self, what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the group committed every click produced so far (a deadline, not a wait)."""
        targets = self._input_ends()
        deadline = time.monotonic() + timeout
        while any((self.broker.committed(GROUP, tp) or 0) < end for tp, end in targets.items()):
            if time.monotonic() > deadline:
                behind = {
                    f"{tp.topic}[{tp.partition}]": (self.broker.committed(GROUP, tp), end)
                    for tp, end in targets.items()
                }
                raise AssertionError(
                    f"{what}: the group did not commit the input within {timeout} s "
                    f"((committed, end) per partition: {behind})"
                )
            self._check_current()
            await asyncio.sleep(0.01)

    def _check_current(self) -> None:
        assert self.current is not None
        job = self.current.job
        if job.done():
            raise AssertionError(f"worker {self.current.name} ended: {job.exception()!r}")

    # faults --------------------------------------------------------------------------

    async def inject(self, fault: str) -> None:
        kind, _, point = fault.partition(":")
        if kind == "crash":
            await self.crash(Point(point))
        elif kind == "zombie":
            await self.zombie(fenced=point == "fenced")
        else:
            await self.broker_fault(Action(kind))

    async def _trap(self, trap: Trap, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the trap springs (a deadline: the point must be on the worker's path)."""
        try:
            async with asyncio.timeout(timeout):
                await trap.sprung.wait()
        except TimeoutError:
            raise AssertionError(
                f"{trap.point} of {trap.worker} not reached within {timeout} s"
            ) from None
        self.note(f"{trap.action} of {trap.worker} at {trap.point} ({trap.where})")

    def _kill_current(self) -> Running:
        """The current worker is dead (the kernel's part done): its session expires."""
        dead = self.current
        assert dead is not None
        self.faults.kill(dead.name)
        if dead.worker.watchdog is not None:
            dead.worker.watchdog._stop.set()  # the kernel ends its threads too
        self.broker.expire_member(GROUP)
        self.dead.append(dead)
        return dead

    def _machine_for_restart(self, dead: Running, *, wipe: bool) -> Path:
        if wipe:
            shutil.rmtree(dead.machine, ignore_errors=True)
            self.note(f"{dead.machine.name}'s disk is replaced: a full restore")
        return dead.machine

    async def crash(self, point: Point) -> None:
        assert self.current is not None
        if point in (Point.RESTORE, Point.PRODUCER_INIT):
            # Killed anywhere; its successor dies starting (restoring a fresh disk).
            self.note(f"{self.current.name} killed")
            restore = point is Point.RESTORE
            machine = self._machine_for_restart(self._kill_current(), wipe=restore)
            starting = self.start(machine, point, skip=self.rng.randint(0, 3))
            await self._trap(self.sprung[-1])
            assert self.current is starting
        elif point is Point.ANYWHERE:
            self.note(f"{self.current.name} killed")
        else:
            # A mid-batch trap springs in one of the task's four runners, after 0-3
            # of them took the batch.
            skip = self.rng.randint(0, 3) if point is Point.MID_BATCH else self.rng.randint(0, 2)
            trap = self.faults.arm(Trap(self.current.name, point, skip=skip))
            self.sprung.append(trap)
            await self._trap(trap)
        dead = self._kill_current()
        self.start(self._machine_for_restart(dead, wipe=self.rng.random() < 0.2))

    async def broker_fault(self, action: Action) -> None:
        assert self.current is not None
        trap = self.faults.arm(Trap(self.current.name, Point.BEFORE_TXN_COMMIT, action))
        self.sprung.append(trap)
        await self._trap(trap)

    async def zombie(self, *, fenced: bool) -> None:
        """The worker's session expires while it runs on (cut off from the group
        coordinator, say), and another takes over on the other machine. Either the new
        owner's tasks are slow to register their transactional ids, and the zombie
        commits what it holds meanwhile, after the group assigned its partitions to the
        new owner; or the zombie's commits hang until the new owner runs, and are then
        refused: it was fenced."""
        old = self.current
        assert old is not None
        hold = None
        if fenced:
            hold = self.faults.arm(Trap(old.name, Point.BEFORE_TXN_COMMIT, Action.HOLD))
            self.sprung.append(hold)
            await self._trap(hold)
        self.broker.expire_member(GROUP)  # for good: it never polls the group again
        other = self.machines[1] if old.machine == self.machines[0] else self.machines[0]
        new = self.start(other, *(() if fenced else (Point.PRODUCER_INIT, Action.DELAY)))
        self.note(f"{old.name}'s session expired: a zombie while {new.name} takes over")
        if not fenced:
            await self._trap(self.sprung[-1])
            await asyncio.sleep(DELAY_S)  # the slow registrations' time
            self.faults.disarm(new.name)
        await self.caught_up(f"{new.name} took over from {old.name}")
        if hold is not None:
            hold.released.set()
            held = {name.removeprefix(f"{GROUP}-") for name in hold.held}
            assert old.worker.coordinator is not None
            tasks = old.worker.coordinator.tasks
            await wait_for(
                lambda: not held & {str(t) for t in tasks}, what=f"{old.name}'s commits fenced"
            )
            self.note(f"zombie {old.name}: its commits of {sorted(held)} were refused")
        old.worker.stop()
        await asyncio.wait_for(old.job, 10)
        self.note(f"zombie {old.name} stopped")

    # the end -------------------------------------------------------------------------

    async def drain(self) -> Verdict:
        """Stop the input, let the last worker commit everything and close every window,
        stop it, and check the topics and the table's files against the input."""
        assert self._feeder is not None and self.current is not None
        self._feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._feeder
        await self.caught_up("the drain")
        chaos = self.current.chaos
        await self._windows_closed(chaos)
        last = self.current
        last.worker.stop()
        await asyncio.wait_for(last.job, 10)
        verdict = await check(self.url, read_committed=True, chaos=chaos)
        self.table_in_files = table_in_files(last.machine, chaos.app)
        return verdict

    async def _windows_closed(self, chaos: ChaosApp, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until every window of the input was emitted: closed by the clock, once idle."""
        deadline = time.monotonic() + timeout
        while missing := (await read_windows(self.url, read_committed=True, chaos=chaos)).missing:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} windows never closed: {sorted(missing)[:5]}")
            self._check_current()
            await asyncio.sleep(0.05)

    async def run(self, faults: Sequence[str]) -> Verdict:
        self.start(self.machines[0])
        await wait_for(
            lambda: self.broker.partition_count("chaos-clicks") is not None, what="the topics"
        )
        # The profiles table is in place before the first click: a join task takes
        # whatever is queued next, and a click fetched before its user's profile (after
        # a start with a backlog) would find no profile, faults or none.
        chaos = self.app()
        await chaos.app.send_many(
            chaos.profiles, [(f"user{u}", f"name{u}", 0) for u in range(USERS)]
        )
        await self.caught_up("the profiles")
        self._feeder = asyncio.create_task(self.feed(chaos), name="feeder")
        for fault in faults:
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
            await self.inject(fault)
            await self.caught_up(f"recovery from {fault}")
        return await self.drain()


def schedule(rng: random.Random, extra: int) -> list[str]:
    """Every fault once, in a random order, then `extra` more chosen at random."""
    faults = list(FAULTS)
    rng.shuffle(faults)
    return faults + rng.choices(FAULTS, k=extra)
