"""`streamkit worker APP --processes N`: N worker processes of one app, kept running.

Python threads add no CPU to stream processing, so where Kafka Streams runs more
stream threads in one client, streamkit runs more worker processes under one
supervisor. Each is an ordinary member of the app's group; they share the data
directory (task directories are locked, `state/task_dir_lock.py`, so a moving
task is never open in two of them), and the leader sees that they share it
(`MemberInfo.state_dir`): a task moving between them restores nothing, and no
standby is placed beside its active copy.

The supervisor
- prefixes each child's output lines with its name (`[w2] ...`);
- replaces a child that dies (killed, crashed: Kafka Streams' replacement of a
  dead stream thread), waiting longer each time one dies young; a child that
  stops with an error (exit status 1: a record under `fail`, a bad setting)
  would fail again, so that stops them all, and one that stops by itself
  (status 0, `--stop-when-idle`) is not replaced;
- grows and shrinks while it runs: SIGTTIN adds a process, SIGTTOU removes the
  newest (never below one), as gunicorn does; `streamkit scale` or an HTTP call
  (`PUT /processes {"processes": N}` on the address in its control file) sets
  the count;
- stops every child gracefully on SIGTERM or SIGINT, and kills what is left once
  the workers' own shutdown bound has passed.
Children started with `--supervisor-pid` stop by themselves when the supervisor
dies, even of SIGKILL (`runtime/parent_watch.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from ..state.task_dir_lock import TaskDirLock
from .supervisor_control import CONTROL_FILE, control_dir, serve_control
from .worker import EXIT_FAILED, EXIT_SHUTDOWN_TIMED_OUT

log = logging.getLogger("streamkit.supervisor")

# A child that dies younger than this is replaced after a growing delay.
YOUNG_DEATH_S = 10.0
MAX_RESTART_DELAY_S = 30.0
LINE_LIMIT = 1 << 20


def cpu_count() -> int:
    """The cores this process may run on (`--processes auto`)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(eq=False)
class Child:
    """One worker process and what the supervisor knows of it."""

    slot: int
    process: asyncio.subprocess.Process
    started_at: float
    retiring: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"w{self.slot + 1}"


class Supervisor:
    """Runs `processes` copies of `command` (a worker command without `--processes`)."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        processes: int,
        state_dir: Path,
        *,
        stop_bound_s: float,
        control_port: int = 0,
    ) -> None:
        if processes < 1:
            raise ConfigError(f"--processes must be at least 1, got {processes}")
        self._command = command
        self.target = processes
        self._state_dir = state_dir
        self._stop_bound_s = stop_bound_s
        self._control_port = control_port
        self.children: dict[int, Child] = {}
        self._retired: list[Child] = []
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._young_deaths = 0
        # Slot -> how long its replacement waits (a process that died young).
        self._restart_delays: dict[int, float] = {}
        self._exit_status = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # control ----------------------------------------------------------------------

    def scale_to(self, processes: int, why: str) -> None:
        """Set the number of processes; safe from signal handlers and HTTP threads
        through the loop."""
        if self._stopping.is_set():
            log.info("%s: already stopping, not scaling", why)
            return
        processes = max(1, processes)
        if processes != self.target:
            log.info("%s: from %d to %d processes", why, self.target, processes)
        self.target = processes
        self._changed.set()

    def stop(self, why: str) -> None:
        if not self._stopping.is_set():
            log.info("%s: stopping every process gracefully", why)
        self._stopping.set()
        self._changed.set()

    def describe(self) -> dict[str, Any]:
        return {
            "processes": self.target,
            "running": [
                {"name": c.name, "pid": c.process.pid}
                for c in sorted(self.children.values(), key=lambda c: c.slot)
            ],
        }

    # running ----------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until stopped, or until every child stopped by itself; the
        exit status: 0, EXIT_FAILED when a child failed, EXIT_SHUTDOWN_TIMED_OUT
        when one did not stop cleanly."""
        loop = self._loop = asyncio.get_running_loop()
        lock = TaskDirLock(control_dir(self._state_dir))
        if not lock.try_acquire():
            raise ConfigError(
                f"another supervisor ({lock.holder()}) runs this app with state in "
                f"{self._state_dir}: change its count with `streamkit scale`"
            )
        server = serve_control(
            self._state_dir, self._control_port, loop, self.describe, self.scale_to
        )
        signals = {
            signal.SIGTERM: lambda: self.stop("received SIGTERM"),
            signal.SIGINT: lambda: self.stop("received SIGINT"),
            signal.SIGTTIN: lambda: self.scale_to(self.target + 1, "received SIGTTIN"),
            signal.SIGTTOU: lambda: self.scale_to(self.target - 1, "received SIGTTOU"),
        }
        for sig, handler in signals.items():
            loop.add_signal_handler(sig, handler)
        try:
            await self._supervise()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            server.shutdown()
            server.server_close()
            with contextlib.suppress(OSError):
                (control_dir(self._state_dir) / CONTROL_FILE).unlink()
            lock.release()
        return self._exit_status

    async def _supervise(self) -> None:
        """1. Start or retire children until their number is the target. 2. Wait for a
        change: a child's exit, a new target, a stop. 3. On a stop, stop them all."""
        exits: dict[asyncio.Task[int], Child] = {}
        while not self._stopping.is_set():
            if self.target == 0 and not self.children:
                log.info("every process stopped by itself: the supervisor stops too")
                return
            # 1. Match the target: the lowest free slots start, the highest retire.
            active = sorted(c.slot for c in self.children.values() if not c.retiring)
            for slot in active[self.target :]:
                self._retire(self.children[slot])
            free = (s for s in range(self.target + len(self.children)) if s not in self.children)
            for _ in range(self.target - len(active)):
                child = await self._start(next(free))
                if child is None:
                    break  # stopped while waiting to start it
                exits[asyncio.create_task(child.process.wait())] = child
            # 2. Wait.
            changed = asyncio.create_task(self._changed.wait())
            done, _ = await asyncio.wait([changed, *exits], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            self._changed.clear()
            for job in done & exits.keys():
                await self._ended(exits.pop(job), job.result())
        # 3. Stop them all, within the workers' own bound, then kill what is left.
        for child in list(self.children.values()):
            self._retire(child)
        if exits:
            _, late = await asyncio.wait(exits, timeout=self._stop_bound_s)
            for job in late:
                child = exits[job]
                log.error(
                    "%s (pid %d) did not stop in time: killing it", child.name, child.process.pid
                )
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                self._note_status(EXIT_SHUTDOWN_TIMED_OUT)
            await asyncio.wait(exits)
            for job, child in exits.items():
                await self._ended(child, job.result())

    async def _start(self, slot: int) -> Child | None:
        delay = self._restart_delays.pop(slot, 0.0)
        if delay:
            log.info("waiting %.0f s before starting w%d (processes died young)", delay, slot + 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return None
        process = await asyncio.create_subprocess_exec(
            *self._command(slot),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            # Its own process group: a Ctrl-C reaches the supervisor, which stops it.
            process_group=0,
        )
        child = Child(slot, process, time.monotonic())
        assert process.stdout is not None and process.stderr is not None
        child.pumps = [
            asyncio.create_task(_pump(process.stdout, sys.stdout, child.name)),
            asyncio.create_task(_pump(process.stderr, sys.stderr, child.name)),
        ]
        self.children[slot] = child
        log.info("started %s (pid %d); %d processes", child.name, process.pid, len(self.children))
        return child

    def _retire(self, child: Child) -> None:
        if not child.retiring:
            child.retiring = True
            log.info("stopping %s (pid %d)", child.name, child.process.pid)
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)

    async def _ended(self, child: Child, status: int) -> None:
        """A child exited: say how, and decide whether it is replaced."""
        await asyncio.gather(*child.pumps)  # its last lines first
        del self.children[child.slot]
        how = _how(status)
        if child.retiring:
            log.info("%s (pid %d) stopped: %s", child.name, child.process.pid, how)
            if status not in (0, -signal.SIGTERM):
                self._note_status(EXIT_SHUTDOWN_TIMED_OUT)
            return
        if status == 0:
            log.info("%s (pid %d) stopped by itself: not replaced", child.name, child.process.pid)
            self.target -= 1
            return
        if status == EXIT_FAILED:
            log.error(
                "%s (pid %d) stopped with an error (above); it would fail again: stopping all",
                child.name,
                child.process.pid,
            )
            self._note_status(EXIT_FAILED)
            self._stopping.set()
            return
        young = time.monotonic() - child.started_at < YOUNG_DEATH_S
        self._young_deaths = self._young_deaths + 1 if young else 0
        if self._young_deaths:
            self._restart_delays[child.slot] = min(
                MAX_RESTART_DELAY_S, 2.0 ** (self._young_deaths - 1)
            )
        log.warning(
            "%s (pid %d) died (%s): starting a replacement", child.name, child.process.pid, how
        )

    def _note_status(self, status: int) -> None:
        if self._exit_status != EXIT_FAILED:
            self._exit_status = status


async def _pump(stream: asyncio.StreamReader, out: IO[str], name: str) -> None:
    """Copy a child's output to ours, a line at a time, each prefixed with its name."""
    prefix = f"[{name}] ".encode()
    sink = out.buffer
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than LINE_LIMIT: pass on what there is
            line = await stream.read(LINE_LIMIT)
        if not line:
            return
        # Our own output gone (a closed pipe) must not block the child: keep draining.
        with contextlib.suppress(OSError):
            sink.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            sink.flush()


def _how(status: int) -> str:
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"
