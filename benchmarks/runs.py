"""The workloads: each starts its processes, observes their output, checks it, stops them.

All runs share one pre-filled input topic (each app is its own consumer group, so
each reads it all from the start) and get their own app id and output topic. The
latency run, at a paced load, has input and output topics of its own that start
empty (see `Run._latency`).

A one-worker workload is a `Workload` in `WORKERS`: a streamkit app, how its
outputs are checked, and the ceiling it is compared with (or the workload of the
same run it is a ratio to). Its runs alternate with its ceiling's, ceiling first,
`repeats` pairs, so that each pair shares the machine's moment; the ratio of each
pair is reported, their median and their spread. Adding one is a line in
`WORKERS` and one in `WORKLOADS` (plus an app, and a ceiling kind if it is new).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from . import profile as profiling
from . import scaling_runs, verify
from .config import Config
from .data import changelog, partition_of, payments, user_id, users
from .kafka import (
    BenchError,
    Observer,
    OutputReader,
    PacedProducer,
    create_topics,
    fill,
    measure_group_join,
    stuck_report,
)
from .procs import CpuMeter, Proc, Processes, find_broker_process, worker_argv

# The worker environment of the exactly-once workloads (the same apps otherwise).
EXACTLY_ONCE_ENV = {"STREAMKIT_PROCESSING_GUARANTEE": "exactly_once"}


@dataclass(frozen=True)
class Workload:
    """One worker of `benchmarks/apps/<app>.py`, its outputs checked as `expect` says
    (a key of `verify.EXPECTED`), next to the ceiling `ceiling` (a kind of
    `benchmarks/ceilings.py`) or, with `baseline`, as a ratio to that workload's
    figure of the same run."""

    app: str
    expect: str
    ceiling: str | None = None
    baseline: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


WORKERS: dict[str, Workload] = {
    "passthrough": Workload("passthrough", "passthrough", ceiling="passthrough"),
    "passthrough_dsl": Workload("passthrough_dsl", "passthrough", ceiling="passthrough"),
    "passthrough_batches": Workload("passthrough_batches", "passthrough", ceiling="passthrough"),
    "count": Workload("count", "count", ceiling="count"),
    "windowed_count": Workload("windowed_count", "windowed_count", ceiling="windowed_count"),
    "stream_table_join": Workload("stream_table_join", "join", ceiling="join"),
    "passthrough_eos": Workload(
        "passthrough", "passthrough", baseline="passthrough", env=EXACTLY_ONCE_ENV
    ),
    "count_eos": Workload("count", "count", baseline="count", env=EXACTLY_ONCE_ENV),
}
# In the order they run: a baseline before the workloads that divide by it.
WORKLOADS = (*WORKERS, "restore", "scaling", "processes", "warmup_join", "latency", "curve")

# How long an exactly-once output topic's last stable offsets must stand still before
# its outputs are read back: longer than the commit interval (0.1 s), so that every
# task's last transaction has committed.
EOS_QUIET_S = 0.3
# Full speed: the rate over the middle of the run (from RAMP_FROM to RAMP_TO of the
# outputs); reached when the next RAMP_WINDOW_S ran at RAMP_SHARE of it.
RAMP_FROM, RAMP_TO, RAMP_WINDOW_S, RAMP_SHARE = 0.4, 0.9, 0.2, 0.8
OWNS = re.compile(r"streamkit\.coordinator: owns tasks: (.*)$", re.MULTILINE)
RESTORED = re.compile(
    r"streamkit\.task: task (\d+_\d+) restored (\d+) records of (\S+) in ([\d.]+) s", re.MULTILINE
)

_started = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def rate_between(observer: Observer, n: int) -> tuple[float, float, float]:
    """(records/s, first output time, last output time): from the first fetch that saw
    outputs to the one that saw the n-th, counting the records in between."""
    first = observer.marks[0]
    last_at = observer.reached_at(n)
    assert last_at is not None
    seconds = last_at - first[0]
    if seconds <= 0:
        raise BenchError(f"{observer.topic}: all outputs appeared in one fetch; use more records")
    return (n - first[1]) / seconds, first[0], last_at


def ramp(marks: list[tuple[float, int]], n: int) -> dict[str, float]:
    """How long after the first output a run reached full speed.

    Full speed is the rate between RAMP_FROM and RAMP_TO of the `n` outputs; the ramp
    ends at the first mark from which the next RAMP_WINDOW_S ran at RAMP_SHARE of
    it or faster. Also the rate over the first half second, against full speed."""
    at = _reached(marks)
    t0, c0 = marks[0]
    ta, ca = at(RAMP_FROM * n)
    tb, cb = at(RAMP_TO * n)
    full = (cb - ca) / (tb - ta) if tb > ta else math.nan
    ramp_s = math.nan
    for i, (t, c) in enumerate(marks):
        later = next(((u, d) for u, d in marks[i + 1 :] if u >= t + RAMP_WINDOW_S), None)
        if later is None:
            break
        if (later[1] - c) / (later[0] - t) >= RAMP_SHARE * full:
            ramp_s = t - t0
            break
    th, ch = next(((u, d) for u, d in marks if u >= t0 + 0.5), marks[-1])
    first = (ch - c0) / (th - t0) if th > t0 else math.nan
    return {"full_speed_records_per_s": full, "ramp_s": ramp_s, "first_half_s_records_per_s": first}


def _reached(marks: list[tuple[float, int]]) -> Callable[[float], tuple[float, int]]:
    def at(count: float) -> tuple[float, int]:
        return next(((t, c) for t, c in marks if c >= count), marks[-1])

    return at


def cpu_text(cores: dict[str, float]) -> str:
    """`pass-1 0.95, broker 0.40, machine 1.50 cores`."""
    parts = [f"{name} {value:.2f}" for name, value in cores.items() if value == value]
    return ", ".join(parts) + " cores busy"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput, with every run's figure beside it."""
    best = dict(sorted(runs, key=lambda r: r["records_per_s"])[len(runs) // 2])
    best["runs_records_per_s"] = [r["records_per_s"] for r in runs]
    return best


def spread(values: list[float]) -> dict[str, float]:
    """The median and the range of a run's repeated figures."""
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1]}


def ratios(runs: list[dict[str, Any]], against: list[float]) -> dict[str, Any]:
    """Each run's figure over the figure of the same index (its pair), and their spread."""
    each = [r["records_per_s"] / a for r, a in zip(runs, against, strict=True)]
    return {"ratios": each, "ratio": spread(each)}


def _exited_well(proc: Proc) -> None:
    """A ceiling may finish before the observer sees its last outputs; only a failure counts."""
    if not proc.alive and proc.popen.returncode != 0:
        proc.check_alive()


def read_store(path: Path) -> dict[bytes, bytes]:
    """A state file's rows (streamkit's and the ceilings' layouts both have kv(key, value))."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {bytes(k): bytes(v) for k, v in db.execute("SELECT key, value FROM kv")}


@dataclass
class Run:
    cfg: Config
    url: str
    workdir: Path
    procs: Processes
    tag: str
    profile_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    broker_process: psutil.Process | None = None
    inputs: list[tuple[bytes, bytes]] = field(default_factory=list)  # the input topic's records
    failures: list[str] = field(default_factory=list)  # workloads that failed
    _expected: dict[str, verify.Expected] = field(default_factory=dict)

    def name(self, what: str) -> str:
        return f"skb-{self.tag}-{what}"

    @property
    def input(self) -> str:
        return self.name("input")

    @property
    def users(self) -> str:
        """The join's table topic: a row per user, filled before the input (earlier times)."""
        return self.name("users")

    def expected(self, kind: str) -> verify.Expected:
        if kind not in self._expected:
            self._expected[kind] = verify.EXPECTED[kind](self.inputs)
        return self._expected[kind]

    # set-up --------------------------------------------------------------------

    async def prepare(self) -> None:
        cfg = self.cfg
        await create_topics(self.url, [self.users, self.input], cfg.partitions)
        await fill(self.url, self.users, cfg.partitions, users(cfg.keys))
        self.inputs = records = payments(cfg.records, cfg.keys)
        began = time.monotonic()
        await fill(self.url, self.input, cfg.partitions, records)
        say(
            f"input {self.input}: {len(records):,} records, {cfg.keys:,} keys, "
            f"{cfg.partitions} partitions, filled in {time.monotonic() - began:.1f} s"
        )
        self.results["group_join_s"] = join = await measure_group_join(
            self.url, self.input, self.name("join-probe"), cfg.kafka_options()
        )
        say(f"a bare aiokafka consumer's first records in a new group: {join:.2f} s")
        port = int(self.url.rsplit(":", 1)[-1].strip("/"))
        self.broker_process = find_broker_process(port)

    # processes -------------------------------------------------------------------

    def worker(
        self,
        name: str,
        app: str,
        app_id: str,
        output: str,
        *,
        log_level: str = "warning",
        input_topic: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> Proc:
        data_dir = self.data_dir(name)
        env = {
            "SKB_APP_ID": app_id,
            "SKB_INPUT": input_topic or self.input,
            "SKB_OUTPUT": output,
            "SKB_TABLE": self.users,
            "SKB_PARTITIONS": str(self.cfg.partitions),
            "STREAMKIT_KAFKA_OPTIONS": json.dumps(self.cfg.worker_kafka_options()),
            **(extra_env or {}),
        }
        argv = worker_argv(f"benchmarks.apps.{app}:app", self.url, data_dir, log_level)
        return self.procs.start(name, [*argv, *extra_args], env)

    def data_dir(self, name: str) -> Path:
        path = self.workdir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ceiling(self, name: str, kind: str, output: str, *args: str) -> Proc:
        """`python -m benchmarks.ceilings KIND` with the workers' client options."""
        argv = [
            sys.executable, "-m", "benchmarks.ceilings", kind,
            "--broker", self.url,
            "--input", self.input,
            "--output", output,
            "--table", self.users,
            "--group", self.name(name),
            "--records", str(self.cfg.records),
            "--partitions", str(self.cfg.partitions),
            "--data-dir", str(self.data_dir(name)),
            "--kafka-options", json.dumps(self.cfg.worker_kafka_options()),
            *args,
        ]  # fmt: skip
        return self.procs.start(name, argv)

    async def observe(self, topic: str, **kwargs: Any) -> Observer:
        """Create `topic` and watch it; by its high watermarks unless told otherwise."""
        await create_topics(self.url, [topic], self.cfg.partitions)
        kwargs.setdefault("watermarks_only", True)
        return await Observer(self.url, topic, self.cfg.partitions, **kwargs).start()

    def _alive(self, *procs: Proc) -> Callable[[], None]:
        def check() -> None:
            for proc in procs:
                proc.check_alive()

        return check

    async def _stop(self, *procs: Proc) -> None:
        """Stop the processes; one that logged a traceback or an error fails the run."""
        await asyncio.gather(*(p.stop() for p in procs))
        for proc in procs:
            problems = proc.problems()
            if problems:
                raise BenchError(
                    f"{proc.name} logged {len(problems)} error line(s), e.g. "
                    f"{problems[0].strip()!r}: its figure does not count\n{proc.tail(40)}"
                )

    async def _timed(
        self,
        observer: Observer,
        procs: list[Proc],
        label: str,
        *,
        alive: Callable[[], None],
        profile: Literal["", "all", "outputs"] = "",
        n: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline, polled
    ) -> dict[str, Any]:
        """Wait for the first output and the n-th. With --profile, `profile` samples the
        first process from its start ("all") or from its first output ("outputs")."""
        n = n or self.cfg.records
        timeout = timeout or self.cfg.phase_timeout_s
        spy = None
        raw = self.profile_dir / f"{label}.raw" if self.profile_dir is not None else None
        if raw is not None and profile == "all":
            # From the end of its imports: the group join that follows is idle time,
            # which py-spy leaves out, so the samples are the processing.
            while "streamkit " not in procs[0].log():
                alive()
                await asyncio.sleep(0.02)
            spy = self.procs.start(f"py-spy-{label}", profiling.record_argv(procs[0].pid, raw))
        try:
            await observer.wait_for(1, timeout=timeout, alive=alive, what=f"{label}: first output")
            procs[0].sample()
            # The peak before any output: start-up and restore.
            peak_before = procs[0].rss_mb
            if raw is not None and profile == "outputs":
                # After a restore: the processing alone.
                spy = self.procs.start(f"py-spy-{label}", profiling.record_argv(procs[0].pid, raw))
            meter = CpuMeter(self._metered(procs))
            await observer.wait_for(n, timeout=timeout, alive=alive, what=label)
            cpu = meter.cores()
            self._check_quiet(label, cpu)
        finally:
            if spy is not None and raw is not None:
                spy.interrupt()
                await spy.wait_exit(30)
                self.profiles[label] = profiling.summarize(
                    raw, f"{label} worker (pid {procs[0].pid})"
                )
        _, first_at, _ = rate_between(observer, n)
        return {
            "startup_s": first_at - min(p.launched_at for p in procs),
            "rss_mb_before_first_output": peak_before,
            # Cores busy while processing (1.0: one core): each process, the broker,
            # and the whole machine, whoever used it.
            "cpu_cores": cpu,
        }

    @staticmethod
    def _rate(observer: Observer, n: int, run: dict[str, Any], *procs: Proc) -> dict[str, Any]:
        """The rate, the ramp to full speed, and the CPU the processes spent per record
        meanwhile: a figure that moves less than the rate when others share the machine."""
        rate, _, _ = rate_between(observer, n)
        cpu = sum(run["cpu_cores"].get(p.name, math.nan) for p in procs)
        return {
            "records_per_s": rate,
            "cpu_us_per_record": 1e6 * cpu / rate,
            **ramp(observer.marks, n),
        }

    async def _owns_tasks(
        self,
        worker: Proc,
        *,
        alive: Callable[[], None] = lambda: None,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        """Until `worker` logged that it owns some task (it logs at info level)."""
        deadline = time.monotonic() + self.cfg.phase_timeout_s
        while not [m for m in OWNS.findall(worker.log()) if m.strip() != "none"]:
            worker.check_alive()
            alive()
            check()
            if time.monotonic() > deadline:
                raise BenchError(f"{worker.name} got no tasks\n{worker.tail()}")
            await asyncio.sleep(0.05)

    def _check_quiet(self, label: str, cores: dict[str, float]) -> None:
        """Note it when something else used the machine meanwhile: the figure is suspect."""
        if any(v != v for v in cores.values()):
            return  # a process ended before it was metered: nothing to judge by
        ours = sum(v for k, v in cores.items() if k != "machine")
        foreign = cores.get("machine", 0.0) - ours
        if foreign > 0.25:
            self.notes.append(
                f"{label}: other processes kept {foreign:.2f} of "
                f"{psutil.cpu_count()} cores busy meanwhile; the figure is suspect"
            )

    def _metered(self, procs: list[Proc]) -> dict[str, psutil.Process]:
        metered = {p.name: psutil.Process(p.pid) for p in procs if p.alive}
        # A supervisor's workers (`--processes N`) are the workload too, not others.
        for name, proc in list(metered.items()):
            try:
                children = proc.children(recursive=True)
            except psutil.Error:
                continue
            for i, child in enumerate(children):
                metered[f"{name}/{i + 1}"] = child
        if self.broker_process is not None:
            metered["broker"] = self.broker_process
        metered["bench"] = psutil.Process()  # this process: the observers
        return metered

    async def _read_back(
        self,
        label: str,
        topic: str,
        expected: verify.Expected,
        *,
        committed: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Read the outputs to the end (their writers are gone) and check them."""
        began, cpu_began = time.monotonic(), time.process_time()
        reader = await OutputReader(
            self.url, topic, self.cfg.partitions, committed=committed
        ).start()
        try:
            await reader.read_to_end(self.cfg.phase_timeout_s)
        finally:
            await reader.stop()
        checked = verify.check(label, reader.records, expected, **kwargs)
        return {
            **checked,
            "verify_read_s": time.monotonic() - began,
            "verify_cpu_s": time.process_time() - cpu_began,
        }

    # one-worker workloads and their ceilings ------------------------------------------

    async def paired(self, name: str) -> None:
        """`repeats` pairs: the ceiling's run, then streamkit's; medians and ratios."""
        workload = WORKERS[name]
        runs, ceilings = [], []
        for i in range(self.cfg.repeats):
            if workload.ceiling is not None:
                ceilings.append(await self._ceiling_run(name, workload, i))
            runs.append(await self._worker_run(name, workload, i))
        result = median_run(runs)
        if ceilings:
            result["ceiling"] = median_run(ceilings)
            result.update(ratios(runs, result["ceiling"]["runs_records_per_s"]))
        elif workload.baseline is not None and workload.baseline in self.results:
            # Each run against the baseline's run of the same index.
            result.update(ratios(runs, self.results[workload.baseline]["runs_records_per_s"]))
        self.results[name] = result
        against = ""
        if "ratio" in result:
            r = result["ratio"]
            against = f"; ratio {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
        say(
            f"{name}: {result['records_per_s']:,.0f} records/s (median of {len(runs)}{against}), "
            f"{result['cpu_us_per_record']:.1f} us of CPU per record, "
            f"full speed {result['ramp_s']:.2f} s after the first output, "
            f"first output {result['startup_s']:.2f} s after launch, peak RSS "
            f"{result['rss_mb']:.0f} MB; {cpu_text(result['cpu_cores'])}"
        )

    async def _worker_run(self, name: str, workload: Workload, i: int) -> dict[str, Any]:
        label = f"{name}-{i}"
        committed = bool(workload.env.get("STREAMKIT_PROCESSING_GUARANTEE") == "exactly_once")
        observer = await self.observe(self.name(f"{label}-out"), committed=committed)
        worker = self.worker(
            label, workload.app, self.name(label), observer.topic, extra_env=workload.env
        )
        try:
            try:
                run = await self._timed(
                    observer,
                    [worker],
                    name,
                    alive=self._alive(worker),
                    profile="all" if i == 0 else "",
                )
                if committed:
                    run.update(await self._settle_committed(observer, worker))
            finally:
                await self._stop(worker)
                await observer.stop()
            run.update(self._rate(observer, self.cfg.records, run, worker))
            run.update(
                await self._read_back(
                    label, observer.topic, self.expected(workload.expect), committed=committed
                )
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await observer.stop()
            raise
        run["rss_mb"] = worker.rss_mb
        return run

    async def _ceiling_run(self, name: str, workload: Workload, i: int) -> dict[str, Any]:
        assert workload.ceiling is not None
        label = f"ceiling-{name}-{i}"
        output = self.name(f"{label}-out")
        changelog_topic = self.name(f"{label}-changelog")
        await create_topics(
            self.url, [changelog_topic], self.cfg.partitions, {"cleanup.policy": "compact"}
        )
        observer = await self.observe(output)
        proc = self.ceiling(label, workload.ceiling, output, "--changelog", changelog_topic)
        try:
            run = await self._timed(observer, [proc], label, alive=lambda: _exited_well(proc))
            code = await proc.wait_exit(self.cfg.phase_timeout_s)
            if code != 0:
                raise BenchError(f"{label} exited with {code}\n{proc.tail()}")
        finally:
            await proc.stop()
            await observer.stop()
        run.update(self._rate(observer, self.cfg.records, run, proc))
        run["internal"] = proc.last_json()
        run["rss_mb"] = proc.rss_mb
        run.update(await self._read_back(label, output, self.expected(workload.expect)))
        return run

    async def _settle_committed(self, observer: Observer, worker: Proc) -> dict[str, Any]:
        """Exactly-once: turn the observer's offsets into records.

        The observer's ends count a commit marker per transaction and partition, so
        its wait ended a few dozen records early. Once the last stable offsets stood
        still for `EOS_QUIET_S` (every task's last transaction committed), a
        read_committed reader reads the outputs from the start until it has one per
        input; the observer's marks are then recounted in records below each noted
        end. The reading comes after the timed window, so it cannot slow the worker
        it measures.
        """
        n, timeout = self.cfg.records, self.cfg.phase_timeout_s
        deadline = time.monotonic() + timeout
        while (last := observer.marks[-1][0]) > time.monotonic() - EOS_QUIET_S:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{observer.topic}: outputs kept coming for {timeout:.0f} s")
            await asyncio.sleep(max(0.01, last + EOS_QUIET_S - time.monotonic()))
        reader = await OutputReader(
            self.url, observer.topic, self.cfg.partitions, committed=True
        ).start()
        try:
            await reader.read_until(n, timeout)
            offsets = reader.offsets()
        finally:
            await reader.stop()
        while observer.records_noted(offsets) < n:
            # The reader saw the last commit before the observer's next fetch did.
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{observer.topic}: the observer noted {observer.records_noted(offsets)} of "
                    f"{n} committed records"
                )
            await asyncio.sleep(0.01)
        await observer.stop()
        observer.recount(offsets)
        return {"commit_markers": sum(observer.per_partition.values()) - n}

    # restore ----------------------------------------------------------------------

    async def restore(self) -> None:
        """`repeats` pairs: the restore ceiling, then a fresh count worker, on a changelog
        of their own each time (a worker's app id names its changelog)."""
        runs, ceilings = [], []
        for i in range(self.cfg.repeats):
            runs.append(await self._restore_run(i, ceilings))
        result = median_run(runs)
        result["ceiling"] = median_run(ceilings)
        result.update(ratios(runs, result["ceiling"]["runs_records_per_s"]))
        self.results["restore"] = result
        r = result["ratio"]
        say(
            f"restore: {result['records_per_s']:,.0f} records/s (median of {len(runs)}; ratio "
            f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}))"
        )

    async def _restore_run(self, i: int, ceilings: list[dict[str, Any]]) -> dict[str, Any]:
        cfg = self.cfg
        app_id = self.name(f"restore-{i}")
        changelog_topic = f"{app_id}-counts-changelog"
        records, totals = changelog(cfg.records, cfg.keys)
        await create_topics(
            self.url, [changelog_topic], cfg.partitions, {"cleanup.policy": "compact"}
        )
        await fill(self.url, changelog_topic, cfg.partitions, records)
        ceilings.append(
            await self._restore_ceiling(f"ceiling-restore-{i}", changelog_topic, totals)
        )
        # One input per partition, so that every task shows it restored by an output.
        probes: dict[int, bytes] = {}
        for k in range(cfg.keys):
            key = user_id(k).encode()
            probes.setdefault(partition_of(key, cfg.partitions), key)
            if len(probes) == cfg.partitions:
                break
        restore_input = self.name(f"restore-{i}-in")
        await create_topics(self.url, [restore_input], cfg.partitions)
        await fill(
            self.url,
            restore_input,
            cfg.partitions,
            [(k, payments(1, 1)[0][1]) for k in probes.values()],
        )
        observer = await self.observe(
            self.name(f"restore-{i}-out"), keep_values=True, watermarks_only=False
        )
        worker = self.worker(
            f"restore-{i}",
            "count",
            app_id,
            observer.topic,
            log_level="info",
            input_topic=restore_input,
        )
        try:
            done_at = await observer.wait_for(
                len(probes), timeout=cfg.phase_timeout_s, alive=self._alive(worker), what="restore"
            )
        finally:
            await self._stop(worker)
            await observer.stop()
        restored = [(t, int(n), float(s)) for t, n, _, s in RESTORED.findall(worker.log())]
        applied = sum(n for _, n, _ in restored)
        seconds = max((s for _, _, s in restored), default=math.nan)
        if applied < len(records) or len(restored) != cfg.partitions:
            raise BenchError(
                f"restore: the worker logged {applied:,} restored records of {len(records):,} "
                f"in {len(restored)} tasks\n{worker.tail()}"
            )
        wrong = [(k, v) for k, v in observer.values if v != str(totals[k] + 1).encode()]
        if wrong:
            raise BenchError(f"restore: outputs {wrong} are not the restored count + 1")
        # The files hold the changelog's last value of every key (the probes' + 1).
        after = Counter(totals)
        after.update(probes.values())
        files = sorted((self.data_dir(f"restore-{i}") / app_id).glob("*/counts.sqlite"))
        self._check_files(f"restore {i}", files, after)
        say(
            f"restore {i}: {applied:,} records in {seconds:.2f} s (slowest of {len(restored)} "
            f"tasks, restoring side by side): {applied / seconds:,.0f} records/s; "
            f"{len(after):,} keys checked in {len(files)} files"
        )
        return {
            "records_per_s": applied / seconds if seconds > 0 else math.nan,
            "restored_records": applied,
            "restore_s": seconds,
            "tasks": len(restored),
            "launch_to_output_s": done_at - worker.launched_at,
            "rss_mb": worker.rss_mb,
            "keys_checked": len(after),
        }

    async def _restore_ceiling(
        self, label: str, changelog_topic: str, totals: Mapping[bytes, int]
    ) -> dict[str, Any]:
        proc = self.ceiling(label, "restore", "", "--changelog", changelog_topic)
        try:
            if await proc.wait_exit(self.cfg.phase_timeout_s) != 0:
                raise BenchError(f"{label} failed\n{proc.tail()}")
        finally:
            await proc.stop()
        result: dict[str, Any] = dict(proc.last_json())
        result["rss_mb"] = proc.rss_mb
        self._check_files(label, sorted(self.data_dir(label).glob("restore-*.sqlite")), totals)
        return result

    def _check_files(self, label: str, files: list[Path], totals: Mapping[bytes, int]) -> None:
        """The state files hold each key's last changelog value, and nothing else."""
        got: dict[bytes, int] = {}
        for path in files:
            got.update((k, int(v)) for k, v in read_store(path).items())
        if got != dict(totals):
            wrong = [k for k in totals if got.get(k) != totals[k]]
            raise BenchError(
                f"{label}: the state files hold {len(got):,} keys for {len(totals):,}; "
                f"{len(wrong):,} wrong, e.g. {wrong[:3]} "
                f"({[(got.get(k), totals[k]) for k in wrong[:3]]} (file, changelog))"
            )

    # two workers ---------------------------------------------------------------------

    async def scaling(self) -> None:
        """Two passthrough workers started together; the median of `repeats` runs (one
        full run once gave 0.84 x one worker, its workers half idle: one run is too few).
        Their outputs are checked like the others', a replay counted (a rebalance in the
        run may replay records: at-least-once)."""
        runs = []
        for i in range(self.cfg.repeats):
            label = f"scale-{i}"
            observer = await self.observe(self.name(f"{label}-out"))
            workers = [
                self.worker(
                    f"{label}-{w}", "passthrough", self.name(label), observer.topic,
                    log_level="info",
                )
                for w in (1, 2)
            ]  # fmt: skip
            try:
                run = await self._timed(observer, workers, "scaling", alive=self._alive(*workers))
            finally:
                await self._stop(*workers)
                await observer.stop()
            run.update(self._rate(observer, self.cfg.records, run, *workers))
            run.update(
                await self._read_back(
                    label, observer.topic, self.expected("passthrough"), replays_allowed=True
                )
            )
            first_owned = [
                (m[1].split() if m else []) for m in (OWNS.search(w.log()) for w in workers)
            ]
            if sorted(len(o) for o in first_owned) != [self.cfg.partitions // 2] * 2:
                self.notes.append(
                    f"scaling run {i}: the first assignment was {first_owned}, not an even "
                    "split; the run includes a rebalance"
                )
            run["rss_mb"] = max(w.rss_mb for w in workers)
            runs.append(run)
        self.results["scaling"] = result = median_run(runs)
        say(
            f"scaling: two workers {result['records_per_s']:,.0f} records/s (median of "
            f"{len(runs)}); {result['duplicates']} replayed outputs; "
            f"{cpu_text(result['cpu_cores'])}"
        )

    async def processes(self) -> None:
        self.results["processes"] = await scaling_runs.processes(self)

    async def warmup_join(self) -> None:
        self.results["warmup_join"] = await scaling_runs.warmup_join(self)

    # latency ------------------------------------------------------------------------

    async def latency(self) -> None:
        result = await self._ceiling_latency()
        result.update(await self._latency())
        self.results["latency"] = result

    async def _ceiling_latency(self) -> dict[str, Any]:
        """The paced load through the bare-aiokafka passthrough: what two hops through
        this broker cost a process that does the job and nothing else."""
        cfg = self.cfg
        source, sink = self.name("ceiling-lat-input"), self.name("ceiling-lat-out")
        await create_topics(self.url, [source], cfg.partitions)
        stamp_from = time.time()
        observer = await self.observe(sink, watermarks_only=False, stamped_after=stamp_from)
        ticks = round((cfg.latency_warmup_s + cfg.latency_s) / cfg.latency_tick_s)
        total = ticks * max(1, round(cfg.latency_rate * cfg.latency_tick_s))
        argv = [
            sys.executable, "-m", "benchmarks.ceilings", "passthrough",
            "--broker", self.url, "--input", source, "--output", sink,
            "--group", self.name("ceiling-latency"),
            "--kafka-options", json.dumps(self.cfg.worker_kafka_options()),
            "--records", str(total), "--partitions", str(cfg.partitions),
        ]  # fmt: skip
        proc = self.procs.start("ceiling-latency", argv)
        keys = [user_id(k).encode() for k in range(cfg.keys)]
        producer = PacedProducer(
            self.url, source, cfg.partitions, keys, cfg.latency_rate, cfg.latency_tick_s, total
        ).start()
        began = time.monotonic()
        try:
            await observer.wait_for(
                total,
                timeout=cfg.latency_warmup_s + cfg.latency_s + cfg.phase_timeout_s,
                alive=lambda: (_exited_well(proc), producer.check()),
                what="ceiling passthrough under load",
            )
        finally:
            await producer.stop()
            await proc.stop()
            await observer.stop()
        # The ceiling starts with the load: the warm-up covers its start as the worker's.
        steady = [lat for t, lat in observer.latencies if t >= began + cfg.latency_warmup_s]
        if not steady:
            raise BenchError("the latency ceiling took no samples")
        result = {
            "ceiling_p50_ms": 1000 * percentile(steady, 50),
            "ceiling_p99_ms": 1000 * percentile(steady, 99),
        }
        say(
            f"latency ceiling (bare aiokafka passthrough) at {cfg.latency_rate:,}/s: "
            f"p50 {result['ceiling_p50_ms']:.1f} ms, p99 {result['ceiling_p99_ms']:.1f} ms"
        )
        return result

    async def _latency(self) -> dict[str, Any]:
        """p50/p99 at a fixed offered load, then a second worker joins under it.

        On topics of their own that start empty: Tansu's fetch latency grows with a
        partition's length (its own one-hop p99 went from 14 to 67 ms between 25,000
        and 300,000 records at this load), so the pre-filled input would measure the
        broker's storage. Nothing else reads the input meanwhile: a second consumer
        fetching the same partitions from Tansu doubled the worker's p50 and tripled
        its p99. The reference is `_ceiling_latency`, run alone.
        """
        cfg = self.cfg
        app_id = self.name("lat")
        source = self.name("lat-input")
        await create_topics(self.url, [source], cfg.partitions)
        stamp_from = time.time()
        observer = await self.observe(
            self.name("lat-out"), watermarks_only=False, stamped_after=stamp_from
        )
        first = self.worker(
            "lat-1", "passthrough", app_id, observer.topic, input_topic=source, log_level="info"
        )
        second: Proc | None = None
        producer: PacedProducer | None = None
        try:
            await self._owns_tasks(first)
            keys = [user_id(k).encode() for k in range(cfg.keys)]
            producer = PacedProducer(
                self.url, source, cfg.partitions, keys, cfg.latency_rate, cfg.latency_tick_s
            ).start()
            began = time.monotonic()
            say(f"latency: offering {cfg.latency_rate:,} records/s for "
                f"{cfg.latency_warmup_s + cfg.latency_s:.0f} s")  # fmt: skip
            alive = self._alive(first)
            while time.monotonic() - began < cfg.latency_warmup_s + cfg.latency_s:
                alive()
                producer.check()
                await asyncio.sleep(0.1)
            measured = (began + cfg.latency_warmup_s, time.monotonic())
            joined_at = time.monotonic()
            second = self.worker(
                "lat-2", "passthrough", app_id, observer.topic, input_topic=source, log_level="info"
            )
            await self._owns_tasks(second, alive=alive, check=producer.check)
            owned_at = time.monotonic()
            while time.monotonic() - owned_at < cfg.join_settle_s:
                producer.check()
                await asyncio.sleep(0.1)
            await producer.stop()
            ended = time.monotonic()
            # Every record offered must come out before the window is judged.
            try:
                await observer.wait_for(
                    producer.sent,
                    timeout=30.0,  # the offered load drains in moments when all is well
                    alive=self._alive(first, second),
                    what="passthrough under load",
                )
            except BenchError as exc:
                report = await stuck_report(self.url, app_id, source, observer, cfg.partitions)
                raise BenchError(f"{exc}\n{report}\n{first.tail()}\n{second.tail()}") from exc
        finally:
            # Workers first: a failing client stop must not leave them running.
            await self._stop(*(w for w in (first, second) if w is not None))
            with contextlib.suppress(Exception):
                if producer is not None and not producer.stopped:
                    await producer.stop()
            await observer.stop()

        def window(obs: Observer, start: float, end: float) -> list[float]:
            return [lat for t, lat in obs.latencies if start <= t <= end]

        steady = window(observer, *measured)
        if not steady:
            raise BenchError("no latency samples were taken")
        arrivals = observer.arrivals
        join_gaps = [b - a for a, b in itertools.pairwise(arrivals) if b > joined_at and a < ended]
        steady_gaps = [
            b - a for a, b in itertools.pairwise(arrivals) if measured[0] <= a and b <= measured[1]
        ]
        during_join = window(observer, joined_at, observer.reached_at(observer.count) or ended)
        assert producer is not None and second is not None
        result = {
            "p50_ms": 1000 * percentile(steady, 50),
            "p99_ms": 1000 * percentile(steady, 99),
            "max_ms": 1000 * max(steady),
            "latency_samples": len(steady),
            "offered_records_per_s": cfg.latency_rate,
            "producer_late_ticks": producer.late_ticks,
            "steady_max_gap_ms": 1000 * max(steady_gaps, default=0.0),
            "join_pause_s": max(join_gaps, default=math.nan),
            "join_max_latency_ms": 1000 * max(during_join, default=math.nan),
            "second_worker_tasks_after_s": owned_at - joined_at,
            "rss_mb": first.rss_mb,
        }
        say(
            f"latency at {cfg.latency_rate:,}/s: p50 {result['p50_ms']:.1f} ms, p99 "
            f"{result['p99_ms']:.1f} ms; "
            f"second worker owned tasks after {result['second_worker_tasks_after_s']:.1f} s, "
            f"longest output gap {result['join_pause_s']:.2f} s; peak RSS {first.rss_mb:.0f} MB"
        )
        return result

    async def curve(self) -> None:
        """The cost curve as state grows (benchmarks/curve.py, which builds on this)."""
        from .curve import curve

        await curve(self)

    async def all(self, only: set[str]) -> None:
        """Every workload asked for; one that fails (wrong outputs, an error in a log,
        a deadline passed) is reported as failed, with why, and the others run on."""
        await self.prepare()
        for workload in WORKLOADS:
            if workload not in only:
                continue
            try:
                if workload in WORKERS:
                    await self.paired(workload)
                else:
                    await getattr(self, workload)()
            except BenchError as exc:
                say(f"{workload} FAILED: {exc}")
                self.results[workload] = {"failed": str(exc)}
                self.failures.append(workload)
