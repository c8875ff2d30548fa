"""The workloads: each starts its processes, observes their output, and stops them.

All runs share one pre-filled input topic (each app is its own consumer group, so
each reads it all from the start) and get their own app id and output topic. The
latency run, at a paced load, has input and output topics of its own that start
empty (see `Run._latency`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import profile as profiling
from . import scaling_runs
from .config import Config
from .data import changelog, partition_of, payments, user_id
from .kafka import (
    BenchError,
    CommittedReader,
    Observer,
    PacedProducer,
    create_topics,
    fill,
    measure_group_join,
    stuck_report,
)
from .procs import CpuMeter, Proc, Processes, find_broker_process, worker_argv

WORKLOADS = (
    "ceilings",
    "count",
    "count_eos",
    "windowed_count",
    "stream_table_join",
    "restore",
    "scaling",
    "processes",
    "warmup_join",
    "passthrough_dsl",
    "passthrough_eos",
    "passthrough",
)
# The worker environment of the exactly-once workloads (the same apps otherwise).
EXACTLY_ONCE_ENV = {"STREAMKIT_PROCESSING_GUARANTEE": "exactly_once"}
# How long an exactly-once output topic's last stable offsets must stand still before
# its outputs are read back: longer than the commit interval (0.1 s), so that every
# task's last transaction has committed.
EOS_QUIET_S = 0.3
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


def cpu_text(cores: dict[str, float]) -> str:
    """`pass-1 0.95, broker 0.40, machine 1.50 cores`."""
    parts = [f"{name} {value:.2f}" for name, value in cores.items() if value == value]
    return ", ".join(parts) + " cores busy"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput, with every run's figure beside it."""
    best = dict(sorted(runs, key=lambda r: r["records_per_s"])[len(runs) // 2])
    best["runs_records_per_s"] = [r["records_per_s"] for r in runs]
    return best


def _exited_well(proc: Proc) -> None:
    """A ceiling may finish before the observer sees its last outputs; only a failure counts."""
    if not proc.alive and proc.popen.returncode != 0:
        proc.check_alive()


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

    def name(self, what: str) -> str:
        return f"skb-{self.tag}-{what}"

    @property
    def input(self) -> str:
        return self.name("input")

    # set-up --------------------------------------------------------------------

    async def prepare(self) -> None:
        cfg = self.cfg
        self.inputs = records = payments(cfg.records, cfg.keys)
        await create_topics(self.url, [self.input], cfg.partitions)
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
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> Proc:
        data_dir = self.workdir / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "SKB_APP_ID": app_id,
            "SKB_INPUT": input_topic or self.input,
            "SKB_OUTPUT": output,
            "SKB_PARTITIONS": str(self.cfg.partitions),
            "STREAMKIT_KAFKA_OPTIONS": json.dumps(self.cfg.worker_kafka_options()),
            **(extra_env or {}),
        }
        argv = worker_argv(f"benchmarks.apps.{app}:app", self.url, data_dir, log_level)
        return self.procs.start(name, [*argv, *extra_args], env)

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
        await asyncio.gather(*(p.stop() for p in procs))
        for proc in procs:
            for line in proc.problems()[:3]:
                self.notes.append(f"{proc.name} logged: {line.strip()}")

    async def _throughput(
        self,
        observer: Observer,
        workers: list[Proc],
        label: str,
        profile: bool = True,
        settle: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """Wait for the first output and the last; profile in between if asked for.

        `settle` runs after the wait, before the rate is taken from the observer's
        marks: exactly-once runs recount them there (see `_settle_committed`)."""
        n = self.cfg.records
        alive = self._alive(*workers)
        timeout = self.cfg.phase_timeout_s
        spy = None
        if self.profile_dir is not None and profile:
            # From the end of its imports: the group join that follows is idle time,
            # which py-spy leaves out, so the samples are the processing.
            raw = self.profile_dir / f"{label}.raw"
            while "streamkit " not in workers[0].log():
                alive()
                await asyncio.sleep(0.02)
            spy = self.procs.start(f"py-spy-{label}", profiling.record_argv(workers[0].pid, raw))
        try:
            await observer.wait_for(1, timeout=timeout, alive=alive, what=f"{label}: first output")
            meter = CpuMeter(self._metered(workers))
            await observer.wait_for(n, timeout=timeout, alive=alive, what=label)
            cpu = meter.cores()
            self._check_quiet(label, cpu)
            settled = await settle() if settle is not None else {}
        finally:
            if spy is not None:
                spy.interrupt()
                await spy.wait_exit(30)
                self.profiles[label] = profiling.summarize(
                    raw, f"{label} worker (pid {workers[0].pid})"
                )
        rate, first_at, _ = rate_between(observer, n)
        return {
            "records_per_s": rate,
            "startup_s": first_at - min(w.launched_at for w in workers),
            # Cores busy while processing (1.0: one core): each worker, the broker,
            # and the whole machine, whoever used it.
            "cpu_cores": cpu,
            **settled,
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
        for proc in procs:  # a supervisor's workers (`--processes`)
            with contextlib.suppress(psutil.Error):
                for i, child in enumerate(metered[proc.name].children(), 1):
                    metered[f"{proc.name}/w{i}"] = child
        if self.broker_process is not None:
            metered["broker"] = self.broker_process
        metered["bench"] = psutil.Process()  # this process: the observers
        return metered

    # ceilings ---------------------------------------------------------------------

    async def _ceiling(
        self, label: str, kind: str, *args: str, observe: bool = True
    ) -> dict[str, Any]:
        output = self.name(f"ceiling-{label}")
        observer = await self.observe(output) if observe else None
        argv = [
            sys.executable, "-m", "benchmarks.ceilings", kind,
            "--broker", self.url,
            "--input", self.input,
            "--output", output,
            "--records", str(self.cfg.records),
            "--keys", str(self.cfg.keys),
            "--partitions", str(self.cfg.partitions),
            *args,
        ]  # fmt: skip
        proc = self.procs.start(f"ceiling-{label}", argv)
        try:
            if observer is not None:
                await observer.wait_for(
                    1, timeout=self.cfg.phase_timeout_s, alive=lambda: _exited_well(proc)
                )
                meter = CpuMeter(self._metered([proc]))
                await observer.wait_for(
                    self.cfg.records,
                    timeout=self.cfg.phase_timeout_s,
                    alive=lambda: _exited_well(proc),
                    what=f"ceiling {label}",
                )
                cpu = meter.cores()
                self._check_quiet(f"ceiling {label}", cpu)
            code = await proc.wait_exit(self.cfg.phase_timeout_s)
            if code != 0:
                raise BenchError(f"ceiling {label} exited with {code}\n{proc.tail()}")
            result: dict[str, Any] = {"internal": proc.last_json(), "rss_mb": proc.rss_mb}
            if observer is not None:
                result["records_per_s"] = rate_between(observer, self.cfg.records)[0]
                result["cpu_cores"] = cpu
            else:
                result["records_per_s"] = result["internal"]["records_per_s"]
            return result
        finally:
            await proc.stop()
            if observer is not None:
                await observer.stop()

    async def _repeat(
        self, label: str, kind: str, *args: str, observe: bool = True
    ) -> dict[str, Any]:
        runs = []
        for i in range(self.cfg.repeats):
            runs.append(await self._ceiling(f"{label}-{i}", kind, *args, observe=observe))
        best = median_run(runs)
        say(
            f"ceiling {label}: {best['records_per_s']:,.0f} records/s (median of {len(runs)}); "
            f"{cpu_text(best.get('cpu_cores', {}))}"
        )
        return best

    async def ceilings(self) -> None:
        out = self.results.setdefault("ceilings", {})
        out["passthrough_json"] = await self._repeat(
            "passthrough-json", "passthrough", "--serde", "json"
        )
        out["passthrough_model"] = await self._repeat(
            "passthrough-model", "passthrough", "--serde", "model"
        )
        counts = []
        for i in range(self.cfg.repeats):
            changelog_topic = self.name(f"ceiling-count-{i}-changelog")
            await create_topics(
                self.url, [changelog_topic], self.cfg.partitions, {"cleanup.policy": "compact"}
            )
            data = self.workdir / "data" / f"ceiling-count-{i}"
            counts.append(
                await self._ceiling(
                    f"count-{i}", "count", "--changelog", changelog_topic, "--data-dir", str(data)
                )
            )
        out["count"] = best = median_run(counts)
        say(
            f"ceiling count: {best['records_per_s']:,.0f} records/s (median of {len(counts)}); "
            f"{cpu_text(best.get('cpu_cores', {}))}"
        )
        sqlite = self.procs.start(
            "ceiling-sqlite",
            [
                sys.executable, "-m", "benchmarks.ceilings", "sqlite",
                "--records", str(self.cfg.records), "--keys", str(self.cfg.keys),
                "--data-dir", str(self.workdir / "data" / "ceiling-sqlite"),
            ],
        )  # fmt: skip
        if await sqlite.wait_exit(self.cfg.phase_timeout_s) != 0:
            raise BenchError(f"the SQLite ceiling failed\n{sqlite.tail()}")
        out["sqlite"] = sqlite.last_json()
        say(
            "SQLite counters: {:,.0f} updates/s (executemany per 1,000), {:,.0f} (write-behind "
            "per 10,000)".format(
                out["sqlite"]["executemany_per_1000_updates_per_s"],
                out["sqlite"]["writebehind_per_10000_updates_per_s"],
            )
        )

    # streamkit workloads -------------------------------------------------------------

    async def _one_worker(
        self,
        label: str,
        app: str,
        extra_env: dict[str, str] | None = None,
        expected: Callable[[], dict[bytes, list[Any]]] | None = None,
    ) -> dict[str, Any]:
        """The median of `repeats` runs of one worker of `benchmarks/apps/<app>.py`, each
        with its own group and output topic (an app emits one output per input).

        With `expected` (exactly-once workers) the outputs are counted as a
        read_committed reader gets them and checked against it: each key's output
        values (parsed JSON) in order; see `_settle_committed` and `_check_outputs`."""
        runs = []
        for i in range(self.cfg.repeats):
            observer = await self.observe(
                self.name(f"{label}-{i}-out"), committed=expected is not None
            )
            worker = self.worker(
                f"{label}-{i}", app, self.name(f"{label}-{i}"), observer.topic, extra_env=extra_env
            )
            reader = settle = None
            if expected is not None:
                reader = CommittedReader(self.url, observer.topic, self.cfg.partitions)
                settle = functools.partial(self._settle_committed, observer, reader, worker)
            try:
                try:
                    run = await self._throughput(
                        observer, [worker], label, profile=i == 0, settle=settle
                    )
                finally:
                    await self._stop(worker)
                    await observer.stop()
                if reader is not None:
                    # The worker is gone: whatever it wrote is committed or aborted.
                    await reader.read_to_end(self.cfg.phase_timeout_s)
            finally:
                if reader is not None:
                    await reader.stop()
            if reader is not None:
                assert expected is not None
                self._check_outputs(f"{label} run {i}", reader, expected())
            run["rss_mb"] = worker.rss_mb
            runs.append(run)
        result = median_run(runs)
        say(
            f"{label}: {result['records_per_s']:,.0f} records/s (median of {len(runs)}), first "
            f"output {result['startup_s']:.2f} s after launch, peak RSS {result['rss_mb']:.0f} MB; "
            f"{cpu_text(result['cpu_cores'])}"
        )
        return result

    async def _settle_committed(
        self, observer: Observer, reader: CommittedReader, worker: Proc
    ) -> dict[str, Any]:
        """Exactly-once: turn the observer's offsets into records.

        The observer's ends count a commit marker per transaction and partition, so
        its wait ended a few dozen records early. Once the last stable offsets stood
        still for `EOS_QUIET_S` (every task's last transaction committed), a
        read_committed reader reads the outputs from the start until it has one per
        input; the observer's marks are then recounted in records below each noted
        end. The reading comes after the timed window, so it cannot slow the worker
        it measures; its cost is reported as `verify_read_s` and `verify_cpu_s`.
        """
        n, timeout = self.cfg.records, self.cfg.phase_timeout_s
        deadline = time.monotonic() + timeout
        while (last := observer.marks[-1][0]) > time.monotonic() - EOS_QUIET_S:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{observer.topic}: outputs kept coming for {timeout:.0f} s")
            await asyncio.sleep(max(0.01, last + EOS_QUIET_S - time.monotonic()))
        began, cpu_began = time.monotonic(), time.process_time()
        await reader.start()
        await reader.read_until(n, timeout)
        offsets = reader.offsets()
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
        settled = {
            "verify_read_s": time.monotonic() - began,
            "verify_cpu_s": time.process_time() - cpu_began,
            "commit_markers": sum(observer.per_partition.values()) - n,
        }
        say(
            f"{observer.topic}: {n:,} committed outputs read back in "
            f"{settled['verify_read_s']:.2f} s ({settled['verify_cpu_s']:.2f} s of CPU, after "
            f"the timed window); {settled['commit_markers']} commit markers among them"
        )
        return settled

    def _check_outputs(
        self, label: str, reader: CommittedReader, expected: dict[bytes, list[Any]]
    ) -> None:
        """Every input's output exactly once, in its key's order: each key's output values
        (JSON) as a read_committed reader got them, against `expected`. A BenchError
        names what differs: an exactly-once figure is worthless if its outputs are."""
        got: dict[bytes | None, list[Any]] = {}
        for records in reader.records.values():
            for _, key, value in records:
                got.setdefault(key, []).append(None if value is None else json.loads(value))
        if got == expected:
            return
        problems = []
        if reader.count != self.cfg.records:
            problems.append(f"{reader.count:,} outputs for {self.cfg.records:,} inputs")
        missing = expected.keys() - got.keys()
        if missing:
            problems.append(f"{len(missing):,} keys without outputs, e.g. {min(missing)!r}")
        unknown = got.keys() - expected.keys()
        if unknown:
            problems.append(f"{len(unknown):,} keys that were never input, e.g. {unknown!r:.80}")
        wrong = sorted(k for k in expected.keys() & got.keys() if got[k] != expected[k])
        for key in wrong[:3]:
            pairs = itertools.zip_longest(got[key], expected[key])
            first = next((g, e) for g, e in pairs if g != e)
            problems.append(
                f"key {key!r}: {len(got[key])} outputs, {len(expected[key])} expected; "
                f"first difference (got, expected) {first}"
            )
        if len(wrong) > 3:
            problems.append(f"and {len(wrong) - 3:,} more keys with wrong outputs")
        raise BenchError(
            f"{label}: the committed outputs are not the inputs': {'; '.join(problems)}"
        )

    def _inputs_by_key(self) -> dict[bytes, list[Any]]:
        """Each key's input values (parsed JSON) in input order: what a passthrough emits."""
        out: dict[bytes, list[Any]] = {}
        for key, value in self.inputs:
            out.setdefault(key, []).append(json.loads(value))
        return out

    def _counts_by_key(self) -> dict[bytes, list[Any]]:
        """Each key's running counts 1, 2, ... n: what the count app emits."""
        totals = Counter(key for key, _ in self.inputs)
        return {key: list(range(1, total + 1)) for key, total in totals.items()}

    async def _one_output_per_record(
        self, label: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.results[label] = await self._one_worker(label, label, extra_env)

    async def count_eos(self) -> None:
        """The count app, exactly-once: one transaction per task commit (every 0.1 s)."""
        self.results["count_eos"] = await self._one_worker(
            "count_eos", "count", EXACTLY_ONCE_ENV, self._counts_by_key
        )

    async def passthrough_eos(self) -> None:
        """The passthrough app, exactly-once (throughput only: no latency run)."""
        self.results["passthrough_eos"] = await self._one_worker(
            "passthrough_eos", "passthrough", EXACTLY_ONCE_ENV, self._inputs_by_key
        )

    async def count(self) -> None:
        await self._one_output_per_record("count")

    async def passthrough_dsl(self) -> None:
        await self._one_output_per_record("passthrough_dsl")

    async def windowed_count(self) -> None:
        await self._one_output_per_record("windowed_count")

    async def stream_table_join(self) -> None:
        """The users table is filled first, so its rows precede the payments in time."""
        users = self.name("users")
        await create_topics(self.url, [users], self.cfg.partitions)
        rows = [
            (user_id(k).encode(), json.dumps({"user_id": user_id(k), "tier": "gold"}).encode())
            for k in range(self.cfg.keys)
        ]
        await fill(self.url, users, self.cfg.partitions, rows)
        await self._one_output_per_record("stream_table_join", {"SKB_TABLE": users})

    async def restore(self) -> None:
        cfg = self.cfg
        app_id = self.name("restore")
        changelog_topic = f"{app_id}-counts-changelog"
        records, totals = changelog(cfg.records, cfg.keys)
        await create_topics(
            self.url, [changelog_topic], cfg.partitions, {"cleanup.policy": "compact"}
        )
        await fill(self.url, changelog_topic, cfg.partitions, records)
        # One input per partition, so that every task shows it restored by an output.
        probes: dict[int, bytes] = {}
        for k in range(cfg.keys):
            key = user_id(k).encode()
            probes.setdefault(partition_of(key, cfg.partitions), key)
            if len(probes) == cfg.partitions:
                break
        restore_input = self.name("restore-in")
        await create_topics(self.url, [restore_input], cfg.partitions)
        probe_records = [(key, payments(1, 1)[0][1]) for key in probes.values()]
        await fill(self.url, restore_input, cfg.partitions, probe_records)
        say(f"changelog {changelog_topic}: {len(records):,} records; starting a fresh worker")
        observer = await self.observe(
            self.name("restore-out"), keep_values=True, watermarks_only=False
        )
        worker = self.worker(
            "restore", "count", app_id, observer.topic, log_level="info", input_topic=restore_input
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
        seconds = max((s for _, _, s in restored), default=float("nan"))
        if applied < len(records):
            self.notes.append(
                f"restore: the worker logged {applied} restored records of {len(records)}"
            )
        wrong = [
            (key, value) for key, value in observer.values if value != str(totals[key] + 1).encode()
        ]
        if wrong:
            self.notes.append(f"restore: outputs {wrong} are not the restored count + 1")
        self.results["restore"] = {
            "records_per_s": applied / seconds if seconds > 0 else float("nan"),
            "restored_records": applied,
            "restore_s": seconds,
            "tasks": len(restored),
            "launch_to_output_s": done_at - worker.launched_at,
            "rss_mb": worker.rss_mb,
        }
        say(
            f"restore: {applied:,} records in {seconds:.2f} s (slowest of {len(restored)} tasks, "
            f"restoring side by side): {applied / seconds:,.0f} records/s"
        )
        ceiling_runs = []
        for i in range(cfg.repeats):
            ceiling_runs.append(
                await self._ceiling(
                    f"restore-{i}",
                    "restore",
                    "--changelog",
                    changelog_topic,
                    "--data-dir",
                    str(self.workdir / "data" / f"ceiling-restore-{i}"),
                    observe=False,
                )
            )
        best = median_run(ceiling_runs)
        self.results.setdefault("ceilings", {})["restore"] = best
        say(f"ceiling restore: {best['records_per_s']:,.0f} records/s")

    async def scaling(self) -> None:
        """Two passthrough workers started together; the median of `repeats` runs (one
        full run once gave 0.84 x one worker, its workers half idle: one run is too few)."""
        runs = []
        for i in range(self.cfg.repeats):
            observer = await self.observe(self.name(f"scale-{i}-out"))
            workers = [
                self.worker(
                    f"scale-{i}-{w}", "passthrough", self.name(f"scale-{i}"), observer.topic,
                    log_level="info",
                )
                for w in (1, 2)
            ]  # fmt: skip
            try:
                run = await self._throughput(observer, workers, "scaling", profile=False)
            finally:
                await self._stop(*workers)
                await observer.stop()
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
            f"{len(runs)}); {cpu_text(result['cpu_cores'])}"
        )

    async def processes(self) -> None:
        self.results["processes"] = await scaling_runs.processes(self)

    async def warmup_join(self) -> None:
        self.results["warmup_join"] = await scaling_runs.warmup_join(self)

    async def passthrough(self) -> None:
        result = await self._one_worker("passthrough", "passthrough")
        result.update(await self._ceiling_latency())
        result.update(await self._latency())
        self.results["passthrough"] = result

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
        broker's storage, not the worker. Nothing else reads the input meanwhile: a
        second consumer fetching the same partitions from Tansu doubled the worker's
        p50 and tripled its p99. The reference is `_ceiling_latency`, run alone.
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
            "join_pause_s": max(join_gaps, default=float("nan")),
            "join_max_latency_ms": 1000 * max(during_join, default=float("nan")),
            "second_worker_tasks_after_s": owned_at - joined_at,
            "latency_rss_mb": first.rss_mb,
        }
        say(
            f"latency at {cfg.latency_rate:,}/s: p50 {result['p50_ms']:.1f} ms, p99 "
            f"{result['p99_ms']:.1f} ms; "
            f"second worker owned tasks after {result['second_worker_tasks_after_s']:.1f} s, "
            f"longest output gap {result['join_pause_s']:.2f} s; peak RSS {first.rss_mb:.0f} MB"
        )
        return result

    async def all(self, only: set[str]) -> None:
        await self.prepare()
        for workload in WORKLOADS:
            if workload in only:
                await getattr(self, workload)()
