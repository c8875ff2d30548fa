"""The chaos driver: workers, continuous input, and faults injected at random.

A run:
1. fills the profiles table and starts the workers (`streamkit worker chaos.app:app`);
2. produces clicks continuously, each with a unique id and its send time;
3. until the duration is up, injects a fault, waits for the group to catch up with
   every click produced until the fault ended (that wait is the fault's recovery
   time), pauses a few seconds, and injects the next;
4. stops the input, waits until every click is committed and every window closed,
   stops the workers with SIGTERM (each must exit 0), and checks the topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.kafka import committed, high_watermarks
from benchmarks.procs import Proc, Processes, worker_argv
from streamkit.transport import RawRecord

from . import app as chaos_app
from .check import read_windows

FAULTS = ("kill", "sigterm", "freeze", "broker_freeze")
USERS = 40


class ChaosError(Exception):
    """The run could not go on (a worker that never recovered, a deadline passed)."""


@dataclass
class Fault:
    kind: str
    target: str
    began: float
    recovery_s: float = 0.0
    note: str = ""


@dataclass
class Options:
    url: str
    workdir: Path
    duration_s: float
    seed: int
    workers: int = 3
    rate: int = 200  # clicks per second
    exactly_once: bool = False
    session_timeout_ms: int = 6_000
    broker_pid: int | None = None  # None: the broker cannot be frozen (not ours)
    broker_freeze_s: float = 10.0
    kinds: tuple[str, ...] = FAULTS
    # Deterministic order of faults instead of random ones (the short test's).
    sequence: tuple[str, ...] = ()
    recovery_deadline_s: float = 120.0


@dataclass
class Outcome:
    faults: list[Fault] = field(default_factory=list)
    produced: int = 0
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Driver:
    def __init__(self, options: Options, procs: Processes) -> None:
        self.o = options
        self.procs = procs
        self.rng = random.Random(options.seed)
        self.workers: dict[str, Proc] = {}
        self.outcome = Outcome()
        self._next_id = 0
        self._producing: asyncio.Task[None] | None = None

    # processes ------------------------------------------------------------------

    def _start_worker(self, name: str) -> None:
        data_dir = self.o.workdir / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "STREAMKIT_KAFKA_OPTIONS": json.dumps(
                {"session_timeout_ms": self.o.session_timeout_ms, "heartbeat_interval_ms": 1000}
            ),
            "STREAMKIT_PROCESSING_GUARANTEE": (
                "exactly_once" if self.o.exactly_once else "at_least_once"
            ),
            "STREAMKIT_SHUTDOWN_TIMEOUT_S": "15",
        }
        argv = worker_argv(
            "chaos.app:app", self.o.url, data_dir, os.environ.get("CHAOS_LOG_LEVEL", "info")
        )
        self.workers[name] = self.procs.start(name, argv, env)

    async def _stop_worker(self, name: str) -> int | None:
        """SIGTERM; record how it exited (0 is a clean stop)."""
        proc = self.workers[name]
        began = time.monotonic()
        code = await proc.stop(timeout=25)
        took = time.monotonic() - began
        if code != 0 or took > 20:
            self.outcome.problems.append(
                f"{name} exited {code} {took:.1f} s after SIGTERM\n{proc.tail(15)}"
            )
        return code

    # input ---------------------------------------------------------------------------

    async def _produce(self) -> None:
        """Clicks at a steady rate; a broker that does not answer just delays them."""
        from streamkit.runtime.record_writer import RecordWriter
        from streamkit.transport import transport_for

        producer = transport_for(self.o.url).producer()
        await producer.start()
        writer = RecordWriter(producer)
        tick = 0.05
        per_tick = max(1, round(self.o.rate * tick))
        try:
            while True:
                began = time.monotonic()
                now_ms = int(time.time() * 1000)
                for _ in range(per_tick):
                    n = self._next_id
                    self._next_id += 1
                    user = f"user{n % USERS}"
                    writer.write(
                        chaos_app.clicks, user, chaos_app.Click(id=n, user=user), (), now_ms
                    )
                await writer.flush()
                self.outcome.produced = self._next_id
                await asyncio.sleep(max(0.0, tick - (time.monotonic() - began)))
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _fill_profiles(self) -> None:
        chaos_app.app.configure(broker=self.o.url)
        await chaos_app.app.send_many(
            chaos_app.profiles, [(f"user{u}", f"name{u}", 0) for u in range(USERS)]
        )

    # progress -----------------------------------------------------------------------

    async def _caught_up_with(self, targets: dict[int, int]) -> bool:
        try:
            done = await asyncio.wait_for(
                committed(self.o.url, "chaos", chaos_app.clicks.name, chaos_app.PARTITIONS), 10
            )
        except (TimeoutError, Exception):
            return False
        return all(done.get(p, -1) >= end for p, end in targets.items())

    async def _input_ends(self) -> dict[int, int]:
        ends = await asyncio.wait_for(
            high_watermarks(self.o.url, chaos_app.clicks.name, chaos_app.PARTITIONS), 30
        )
        return {p: e or 0 for p, e in ends.items()}

    async def _wait_caught_up(self, what: str) -> float:
        """Seconds until the group has committed every click produced so far."""
        began = time.monotonic()
        targets = await self._input_ends()
        deadline = began + self.o.recovery_deadline_s
        while not await self._caught_up_with(targets):
            self._check_workers()
            if time.monotonic() > deadline:
                raise ChaosError(
                    f"{what}: the group did not commit the input up to {targets} within "
                    f"{self.o.recovery_deadline_s:.0f} s\n"
                    + "\n".join(p.tail(10) for p in self.workers.values())
                )
            await asyncio.sleep(0.25)
        return time.monotonic() - began

    async def _wait_windows_closed(self) -> None:
        """Every window of the input emitted: the workers close idle windows by the
        clock (`close_idle_after`), so this needs them running, not more input."""
        deadline = time.monotonic() + self.o.recovery_deadline_s
        while True:
            windows = await read_windows(self.o.url, read_committed=self.o.exactly_once)
            missing = windows.missing
            if not missing:
                return
            if time.monotonic() > deadline:
                where = sorted({(windows.opened[w], int(w.split("@")[1])) for w in missing})
                raise ChaosError(
                    f"{len(missing)} windows never closed, e.g. {sorted(missing)[:3]}; "
                    f"(partition, window start) of them: {where}\n"
                    + _window_report(
                        where, windows.clicks, windows.emitted, round(chaos_app.WINDOW_S * 1000)
                    )
                )
            await asyncio.sleep(1.0)

    def _check_workers(self) -> None:
        for name, proc in self.workers.items():
            if not proc.alive and proc.popen.returncode not in (0, -signal.SIGKILL):
                raise ChaosError(
                    f"{name} died by itself (exit {proc.popen.returncode})\n{proc.tail()}"
                )

    # faults --------------------------------------------------------------------------

    async def _kill(self, name: str) -> str:
        self.workers[name].kill()
        await asyncio.sleep(self.rng.uniform(1, 3))
        self._start_worker(name)
        return "SIGKILL, restarted"

    async def _sigterm(self, name: str) -> str:
        code = await self._stop_worker(name)
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        self._start_worker(name)
        return f"exit {code}, restarted"

    async def _freeze(self, name: str) -> str:
        pid = self.workers[name].pid
        frozen_s = self.o.session_timeout_ms / 1000 + 2
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(frozen_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"SIGSTOP {frozen_s:.0f} s (past the session timeout), SIGCONT"

    async def _broker_freeze(self, _name: str) -> str:
        assert self.o.broker_pid is not None
        os.kill(self.o.broker_pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.o.broker_freeze_s)
        finally:
            os.kill(self.o.broker_pid, signal.SIGCONT)
        return f"broker SIGSTOP {self.o.broker_freeze_s:g} s, SIGCONT"

    async def _inject(self, kind: str) -> None:
        target = "broker" if kind == "broker_freeze" else self.rng.choice(sorted(self.workers))
        actions: dict[str, Callable[[str], Awaitable[str]]] = {
            "kill": self._kill,
            "sigterm": self._sigterm,
            "freeze": self._freeze,
            "broker_freeze": self._broker_freeze,
        }
        fault = Fault(kind, target, time.monotonic())
        print(f"chaos: {kind} {target}", flush=True)
        fault.note = await actions[kind](target)
        fault.recovery_s = await self._wait_caught_up(f"after {kind} of {target}")
        print(f"chaos:   {fault.note}; caught up in {fault.recovery_s:.1f} s", flush=True)
        self.outcome.faults.append(fault)

    def _kinds(self) -> list[str]:
        kinds = [k for k in self.o.kinds if k != "broker_freeze" or self.o.broker_pid]
        if not kinds:
            raise ChaosError("no fault kind to inject")
        return kinds

    # the run -------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """The numbered steps of the module docstring."""
        # 1. Profiles, workers.
        await self._fill_profiles()
        for i in range(self.o.workers):
            self._start_worker(f"w{i + 1}")
        # 2. Input, and a first catch-up: every worker has joined and processed.
        self._producing = asyncio.create_task(self._produce(), name="input")
        try:
            await self._wait_caught_up("start-up")
            # 3. Faults until the duration is up (or the sequence is done).
            ends_at = time.monotonic() + self.o.duration_s
            queue = list(self.o.sequence)
            kinds = self._kinds()
            while (queue or not self.o.sequence) and time.monotonic() < ends_at:
                await self._inject(queue.pop(0) if queue else self.rng.choice(kinds))
                self._check_producing()
                await asyncio.sleep(self.rng.uniform(1, 4))
        finally:
            # 4. Input off; drain; stop.
            self._producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producing
        await self._wait_caught_up("the final drain")
        await self._wait_windows_closed()
        for name in sorted(self.workers):
            self.outcome.exit_codes[name] = await self._stop_worker(name)
        for name, proc in self.workers.items():
            tracebacks = [line for line in proc.log().splitlines() if "Traceback" in line]
            if tracebacks:
                self.outcome.problems.append(f"{name}: {len(tracebacks)} tracebacks in its log")
        return self.outcome

    def _check_producing(self) -> None:
        if self._producing is not None and self._producing.done():
            self._producing.result()  # raises what stopped the input
            raise ChaosError("the input producer stopped")


def _window_report(
    where: list[tuple[int, int]], clicks: list[RawRecord], out: list[RawRecord], size_ms: int
) -> str:
    """For windows that never closed: their inputs' offsets, and what the partition
    emitted around them (offset, window, count)."""
    lines = []
    for partition, start in where:
        offsets = [
            r.offset
            for r in clicks
            if r.partition == partition and start <= r.timestamp < start + size_ms
        ]
        lines.append(
            f"partition {partition} window {start}: inputs at offsets "
            f"{min(offsets, default=None)}..{max(offsets, default=None)}"
        )
        near = [
            (
                r.offset,
                chaos_app.windowed.decode(r)[0].split("@")[1],
                chaos_app.windowed.decode(r)[1],
            )
            for r in out
            if r.partition == partition
            and abs(int(chaos_app.windowed.decode(r)[0].split("@")[1]) - start) <= 3 * size_ms
        ]
        lines.append(f"  emitted near it: {near}")
    return "\n".join(lines)
