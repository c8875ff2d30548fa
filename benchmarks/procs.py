"""Subprocesses of a benchmark run: `streamkit worker`s and bare-library ceilings.

Every process is registered in a `Processes` registry as it starts, its peak RSS
is sampled with psutil, and `kill_all()` (called from `finally`, on SIGTERM and at
exit) ends whatever is still running, each process by its own pid. On Linux the
children also get SIGKILL if the benchmark process itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from streamkit.devbroker import DevBroker

from .kafka import BenchError

ROOT = Path(__file__).resolve().parent.parent  # the repository: `benchmarks` imports from here
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.peak_rss = 0
        with log_path.open("wb") as log:
            self.launched_at = time.monotonic()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches the benchmark only, which then stops its children.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def rss_mb(self) -> float:
        return self.peak_rss / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (0 once the process is gone)."""
        try:
            times = self._ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self._ps.memory_info().rss)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 25) -> str:
        shown = "\n".join(self.log().splitlines()[-lines:])
        return f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}), last lines:\n{shown}"

    def check_alive(self) -> None:
        if not self.alive:
            raise BenchError(f"{self.name} exited with code {self.popen.returncode}\n{self.tail()}")

    def terminate(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT: what makes py-spy write its output and exit."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    async def stop(self, timeout: float = 20.0) -> int | None:  # noqa: ASYNC109
        """SIGTERM (a worker commits and leaves its group), SIGKILL after `timeout`."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, timeout)
        self.kill()
        return self.popen.returncode

    async def wait_exit(self, timeout: float) -> int:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while self.alive:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not finish within {timeout:.0f} s\n{self.tail()}"
                )
            self.sample()
            await asyncio.sleep(0.05)
        return int(self.popen.returncode)

    def last_json(self) -> dict[str, object]:
        """The last line of output that is a JSON object (what ceilings report)."""
        for line in reversed(self.log().splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    return dict(json.loads(line))
        raise BenchError(f"{self.name} reported nothing\n{self.tail()}")

    def problems(self) -> list[str]:
        """Tracebacks or errors a worker logged: figures from such a run are suspect."""
        text = self.log()
        return [
            line
            for line in text.splitlines()
            if "Traceback" in line or " ERROR " in line or line.startswith("error:")
        ]


class Processes:
    """Every subprocess of a run; samples their RSS and kills the leftovers."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self._sampler: asyncio.Task[None] | None = None

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "SKB_"))}
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        taken = {p.log_path.name for p in self.procs}
        log_name, n = f"{name}.log", 1
        while log_name in taken:
            n += 1
            log_name = f"{name}.{n}.log"
        proc = Proc(name, argv, full_env, self.log_dir / log_name)
        self.procs.append(proc)
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample(), name="rss sampler")
        return proc

    async def _sample(self) -> None:
        while True:
            for proc in self.procs:
                if proc.alive:
                    proc.sample()
            await asyncio.sleep(0.1)

    def kill_all(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        for proc in self.procs:
            proc.kill()


class CpuMeter:
    """CPU used over a window, in cores (1.0: one core kept busy): by each of some
    processes, and by the whole machine (other people's work included)."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self._procs = procs
        self._start = self._read()

    def _read(self) -> tuple[float, dict[str, float], float]:
        used = {}
        for name, proc in self._procs.items():
            try:
                t = proc.cpu_times()
                used[name] = t.user + t.system
            except psutil.Error:
                used[name] = float("nan")
        machine = psutil.cpu_times()
        busy = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0.0)
        busy += getattr(machine, "softirq", 0.0) + getattr(machine, "steal", 0.0)
        return time.monotonic(), used, busy

    def cores(self) -> dict[str, float]:
        (t0, used0, busy0), (t1, used1, busy1) = self._start, self._read()
        wall = max(t1 - t0, 1e-9)
        out = {name: (used1[name] - used0[name]) / wall for name in used0}
        out["machine"] = (busy1 - busy0) / wall
        return out


def find_broker_process(port: int) -> psutil.Process | None:
    """The local broker listening on `port` (to meter its CPU), if we can see it."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if any(c.laddr and c.laddr.port == port for c in proc.net_connections("tcp")):
                return proc
        except psutil.Error:
            continue
    return None


def worker_argv(app_ref: str, broker: str, data_dir: Path, log_level: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamkit",
        "worker",
        app_ref,
        "--broker",
        broker,
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_level,
    ]


def clean_up(procs: Processes, broker: DevBroker | None, workdir: Path, *, keep: bool) -> None:
    """The end of a run, however it ended: every process it started stopped, the
    broker it started stopped, and its work dir removed unless kept (then named)."""
    procs.kill_all()
    if broker is not None:
        broker.stop()
    if keep:
        print(f"work dir kept: {workdir}", file=sys.stderr)
    else:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
