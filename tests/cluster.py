"""A harness for tests that run real `streamkit worker` processes against a real broker.

`Cluster` starts workers as subprocesses (`python -m streamkit worker ...`), each
with its own data dir and environment, their stdout and stderr captured to files
under the test's tmp_path. Tests wait on their log lines with deadlines (never a
fixed sleep), send them SIGTERM or SIGKILL, and the `cluster` fixture kills
whatever a test left running, each process by its own pid (conftest.py).

The Kafka helpers use aiokafka directly, as a user reading the broker would:
produce keyed records with the batch API, read a whole topic to its true end (the
high watermark a fetch reports, because Tansu's ListOffsets under-reports the end),
and read a group's committed offsets (OffsetFetch naming the partitions: Tansu's
answer to an OffsetFetch without a partition list cannot be decoded by aiokafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

APPS = Path(__file__).resolve().parent / "apps"

# Tansu holds a new group's first join for half the session timeout: 6 s gives 3 s.
# A member killed with SIGKILL is noticed once its session expires.
KAFKA_OPTIONS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
COMMIT_INTERVAL_S = 0.5

OWNS = re.compile(r"streamkit\.coordinator: owns tasks: (.*)$", re.MULTILINE)
MOVED = re.compile(
    r"streamkit\.assignor: assigned (\d+) tasks to (\d+) workers(?: \(\d+ standbys\))?; "
    r"(\d+) tasks moved",
    re.MULTILINE,
)
RESTORED = re.compile(
    r"streamkit\.task: task (\d+_\d+) restored (\d+) records of (\S+) in ([\d.]+) s", re.MULTILINE
)


def servers(url: str) -> str:
    """`kafka://host:port` -> `host:port` (what aiokafka takes)."""
    return url.split("://", 1)[-1]


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the one streamkit and Java producers use)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,  # noqa: ASYNC109 (a deadline to poll against)
    what: str,
    interval: float = 0.05,
    details: Callable[[], str] = lambda: "",
) -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{details()}")
        await asyncio.sleep(interval)


# workers --------------------------------------------------------------------------


class WorkerProcess:
    """One `streamkit worker` subprocess with its output in files."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        data_dir: Path,
        log_dir: Path,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self.started_at = time.monotonic()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                list(command),
                cwd=APPS,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.popen.pid} rc={self.popen.poll()}>"

    # output ---------------------------------------------------------------------

    def log(self) -> str:
        """Everything the worker wrote to stderr so far (where its logging goes)."""
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def output(self, tail: int = 60) -> str:
        lines = self.log().splitlines()
        shown = "\n".join(lines[-tail:])
        return (
            f"--- {self.name} (pid {self.popen.pid}, exit {self.popen.poll()}) stderr tail\n{shown}"
        )

    def owned_history(self) -> list[frozenset[str]]:
        """The task sets of every `owns tasks:` line, oldest first."""
        return [
            frozenset() if m[1].strip() == "none" else frozenset(m[1].split())
            for m in OWNS.finditer(self.log())
        ]

    def owned(self) -> frozenset[str] | None:
        """The tasks of the latest `owns tasks:` line; None before the first."""
        history = self.owned_history()
        return history[-1] if history else None

    def moves(self) -> list[tuple[int, int, int]]:
        """(tasks, workers, moved) of each plan this worker made as the group leader."""
        return [(int(a), int(b), int(c)) for a, b, c in MOVED.findall(self.log())]

    def restored(self) -> dict[str, int]:
        """Task -> records restored, from the `task X restored N records` lines (summed)."""
        out: dict[str, int] = {}
        for task, count, _table, _secs in RESTORED.findall(self.log()):
            out[task] = out.get(task, 0) + int(count)
        return out

    async def wait_for_line(
        self,
        pattern: str,
        *,
        timeout: float = 20.0,  # noqa: ASYNC109 (a deadline to poll against)
        count: int = 1,
    ) -> str:
        """Until the log holds `count` lines matching `pattern`; returns the last one."""
        regex = re.compile(pattern, re.MULTILINE)

        def found() -> str | None:
            hits = [m.group(0) for m in regex.finditer(self.log())]
            if len(hits) >= count:
                return hits[count - 1]
            self._fail_if_exited(f"a line matching {pattern!r}")
            return None

        result: str = await wait_until(
            found, timeout=timeout, what=f"{self.name}: {pattern!r}", details=self.output
        )
        return result

    def _fail_if_exited(self, waiting_for: str) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited while waiting for {waiting_for}\n{self.output()}"
            )

    # signals --------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    async def wait_exit(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        await wait_until(
            lambda: self.popen.poll() is not None,
            timeout=timeout,
            what=f"{self.name} to exit",
            details=self.output,
        )
        return int(self.popen.returncode)

    async def stop(self, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """SIGTERM, then insist on a clean exit."""
        self.terminate()
        code = await self.wait_exit(timeout)
        log = self.log()
        assert code == 0, f"{self.name} exited with {code}\n{self.output()}"
        assert "worker stopped cleanly" in log, self.output()
        assert "Traceback" not in log, self.output()


@dataclass
class Cluster:
    """Workers of one app, started from a module in tests/apps with per-process env."""

    kafka_url: str
    root: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    kafka_options: dict[str, Any] = field(default_factory=lambda: dict(KAFKA_OPTIONS))
    commit_interval_s: float = COMMIT_INTERVAL_S

    def start(
        self,
        app_ref: str,
        name: str,
        *,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        args: Sequence[str] = (),
    ) -> WorkerProcess:
        """`python -m streamkit worker APP_REF --broker URL --data-dir DIR`, cwd tests/apps.

        The worker's own name is in `SKT_WORKER`, so an app can stamp its outputs.
        """
        data_dir = data_dir or self.root / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
        full_env.update(
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
            STREAMKIT_KAFKA_OPTIONS=json.dumps(self.kafka_options),
            STREAMKIT_COMMIT_INTERVAL_S=str(self.commit_interval_s),
            SKT_WORKER=name,
        )
        full_env.update(env or {})
        command = [
            sys.executable,
            "-m",
            "streamkit",
            "worker",
            app_ref,
            "--broker",
            self.kafka_url,
            "--data-dir",
            str(data_dir),
            *args,
        ]
        # A restarted worker keeps its name; its logs get a new file.
        taken = {w.stderr_path.stem for w in self.workers}
        log_name = name
        n = 1
        while log_name in taken:
            n += 1
            log_name = f"{name}.{n}"
        worker = WorkerProcess(log_name, command, full_env, data_dir, log_dir)
        self.workers.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    def output(self) -> str:
        return "\n".join(w.output() for w in self.workers)

    def check_no_crash(self) -> None:
        """Every worker is still running, or exited 0; no traceback anywhere."""
        for w in self.workers:
            code = w.popen.poll()
            log = w.log()
            assert code in (None, 0, -signal.SIGKILL), f"{w.name} exited with {code}\n{w.output()}"
            assert "Traceback" not in log, w.output()
            assert " ERROR " not in log, w.output()

    async def wait_for_assignment(
        self,
        workers: Sequence[WorkerProcess],
        tasks: Iterable[str],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
        since: dict[str, int] | None = None,
    ) -> dict[str, frozenset[str]]:
        """Until each of `workers` logged `owns tasks:` (a new line since `since`, if
        given) and their latest lines split `tasks` between them: disjoint, complete."""
        expected = frozenset(tasks)
        since = since or {}

        def settled() -> dict[str, frozenset[str]] | None:
            latest: dict[str, frozenset[str]] = {}
            for w in workers:
                if not w.alive:
                    raise AssertionError(f"{w.name} is not running\n{self.output()}")
                history = w.owned_history()
                if len(history) <= since.get(w.name, 0):
                    return None
                latest[w.name] = history[-1]
            union: set[str] = set()
            for owned in latest.values():
                if union & owned:
                    return None
                union |= owned
            return latest if union == expected else None

        result: dict[str, frozenset[str]] = await wait_until(
            settled,
            timeout=timeout,
            what=f"tasks {sorted(expected)} split over {[w.name for w in workers]}",
            details=self.output,
        )
        return result

    def marks(self) -> dict[str, int]:
        """How many `owns tasks:` lines each worker logged so far (for `since=`)."""
        return {w.name: len(w.owned_history()) for w in self.workers}

    def kill_all(self) -> None:
        for w in self.workers:
            w.kill()


def run_cli(env: Mapping[str, str], args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """`python -m streamkit ARGS` in tests/apps with `env` (STREAMKIT_* only from it), as
    an operator's shell would run it; its output captured."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "streamkit", *args],
        cwd=APPS,
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# Kafka helpers -----------------------------------------------------------------------


async def create_topic(
    url: str, name: str, partitions: int, config: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers(url))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        # Until the metadata lists it, a worker could see it as missing.
        deadline = time.monotonic() + 10
        while True:
            described = await admin.describe_topics([name])
            if described and described[0]["error_code"] == 0 and described[0]["partitions"]:
                return
            assert time.monotonic() < deadline, f"topic {name} did not appear: {described}"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def app_topics(url: str, topic_name: Callable[[str], str], partitions: int) -> dict[str, str]:
    """The environment of a tests/apps app with names unique to the test (SKT_APP_ID,
    SKT_INPUT, SKT_OUTPUT), its input and output topics created."""
    env = {"SKT_APP_ID": topic_name("app"), "SKT_INPUT": topic_name("in")}
    env["SKT_OUTPUT"] = topic_name("out")
    for topic in (env["SKT_INPUT"], env["SKT_OUTPUT"]):
        await create_topic(url, topic, partitions)
    return env


@dataclass(frozen=True)
class Produced:
    """Where a produced record landed."""

    key: bytes
    value: bytes
    partition: int
    offset: int


class Producer:
    """aiokafka's batch API: one batch per partition at a time, sent and awaited together."""

    def __init__(self, url: str, *, max_batch_size: int = 65_536) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers(url), max_batch_size=max_batch_size, linger_ms=0, acks="all"
        )

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, partitions: int, records: Sequence[tuple[bytes, bytes]]
    ) -> list[Produced]:
        """Produce keyed records, each to its key's partition; their offsets, in order."""
        by_partition: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(records):
            by_partition.setdefault(partition_of(key, partitions), []).append(i)
        out: list[Produced | None] = [None] * len(records)

        async def send_partition(partition: int, indexes: list[int]) -> None:
            pending: list[tuple[asyncio.Future[Any], list[int]]] = []
            batch, members = self._producer.create_batch(), []
            for i in indexes:
                key, value = records[i]
                if batch.append(key=key, value=value, timestamp=None) is None:
                    batch.close()
                    pending.append((await self._send(batch, topic, partition), members))
                    batch, members = self._producer.create_batch(), []
                    batch.append(key=key, value=value, timestamp=None)
                members.append(i)
            if members:
                batch.close()
                pending.append((await self._send(batch, topic, partition), members))
            for fut, batch_members in pending:
                base = (await fut).offset
                for n, i in enumerate(batch_members):
                    key, value = records[i]
                    out[i] = Produced(key, value, partition, base + n)

        await asyncio.gather(*(send_partition(p, ix) for p, ix in by_partition.items()))
        return [p for p in out if p is not None]

    async def _send(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self._producer.send_batch(
            batch, topic, partition=partition
        )
        return fut


async def produce(
    url: str, topic: str, partitions: int, records: Sequence[tuple[bytes, bytes]]
) -> list[Produced]:
    async with Producer(url) as producer:
        return await producer.send(topic, partitions, records)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_topic(
    url: str,
    topic: str,
    partitions: int,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> list[Record]:
    """Every record of a topic, from its beginning to its end as of the read.

    Caught up means each partition's position reached the high watermark a fetch
    reported for it, not ListOffsets' end (Tansu under-reports that one).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers(url),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        tps = [KafkaTopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # What must be covered at least: the end as listed when the read began.
        listed = await consumer.end_offsets(tps)
        out: list[Record] = []
        deadline = time.monotonic() + timeout

        async def caught_up() -> bool:
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < max(hw, listed[tp]):
                    return False
            return True

        while not await caught_up():
            assert time.monotonic() < deadline, (
                f"{topic} not read to its end within {timeout} s: "
                f"{[(await consumer.position(tp), consumer.highwater(tp)) for tp in tps]}"
            )
            fetched = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for tp, records in fetched.items():
                out.extend(Record(tp.partition, r.offset, r.key, r.value) for r in records)
        out.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        await consumer.stop()


async def end_offsets(url: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's true end (the high watermark of a fetch)."""
    records = await read_topic(url, topic, partitions)
    ends = dict.fromkeys(range(partitions), 0)
    for r in records:
        ends[r.partition] = max(ends[r.partition], r.offset + 1)
    return ends


async def committed_offsets(url: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1 for none), partitions named."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers(url))
    await admin.start()
    try:
        tps = [KafkaTopicPartition(topic, p) for p in range(partitions)]
        got = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: (got[tp].offset if tp in got else -1) for tp in tps}
    finally:
        await admin.close()


class Feeder:
    """Produces keyed records in the background at a steady rate until stopped.

    Record i has key `key_of(i)` and value `b"%d" % i`, so every output can name the
    input it came from. `produced` fills in as batches are acknowledged.
    """

    def __init__(
        self,
        url: str,
        topic: str,
        partitions: int,
        *,
        rate: float,
        key_of: Callable[[int], bytes],
        start: int = 0,
        tick_s: float = 0.05,
    ) -> None:
        self._url = url
        self._topic = topic
        self._partitions = partitions
        self._per_tick = max(1, round(rate * tick_s))
        self._tick_s = tick_s
        self._key_of = key_of
        self._next = start
        self.produced: list[Produced] = []
        self._stop = asyncio.Event()
        self._job: asyncio.Task[None] | None = None

    def start(self) -> Feeder:
        self._job = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async with Producer(self._url) as producer:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                batch = [
                    (self._key_of(i), b"%d" % i)
                    for i in range(self._next, self._next + self._per_tick)
                ]
                self._next += self._per_tick
                self.produced.extend(await producer.send(self._topic, self._partitions, batch))
                next_tick += self._tick_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), timeout=max(0.0, next_tick - time.monotonic())
                    )

    async def wait_for(self, n: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until at least `n` records are produced in all."""
        await wait_until(
            lambda: len(self.produced) >= n or (self._job is not None and self._job.done()),
            timeout=timeout,
            what=f"{n} records produced",
        )
        if self._job is not None and self._job.done():
            self._job.result()

    async def stop(self) -> list[Produced]:
        self._stop.set()
        if self._job is not None:
            await self._job
        return self.produced


def by_partition(produced: Iterable[Produced]) -> dict[int, list[Produced]]:
    out: dict[int, list[Produced]] = {}
    for p in produced:
        out.setdefault(p.partition, []).append(p)
    return out


def ends_of(produced: Iterable[Produced], partitions: int) -> dict[int, int]:
    """The offset after the last produced record, per partition (0 for none)."""
    ends = dict.fromkeys(range(partitions), 0)
    for p in produced:
        ends[p.partition] = max(ends[p.partition], p.offset + 1)
    return ends


async def wait_for_commits(
    url: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
    details: Callable[[], str] = lambda: "",
) -> dict[int, int]:
    """Until the group's committed offsets reach `ends` on each partition named in it.

    `{p: 1 for p in partitions}` waits until the group has committed anything on
    those partitions: the condition, not a duration, for "a commit happened".
    """
    deadline = time.monotonic() + timeout
    while True:
        committed = await committed_offsets(url, group, topic, max(ends, default=0) + 1)
        if all(committed[p] >= end for p, end in ends.items()):
            return committed
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"group {group} committed {committed} on {topic}, not the ends {ends} within "
                f"{timeout} s\n{details()}"
            )
        await asyncio.sleep(0.2)


def uncommitted_window(
    committed: Mapping[int, int], done: Iterable[tuple[int, int]], partitions: Iterable[int]
) -> dict[int, range]:
    """The offsets a killed worker may have processed after its last commit, per partition.

    `committed` was read before the kill, `done` is (partition, offset) of every input
    the worker is known to have processed: the window runs from the committed offset
    to the offset after the last one done. Only inputs in it may be processed twice.
    """
    wanted = set(partitions)
    reached = dict.fromkeys(wanted, 0)
    for p, o in done:
        if p in wanted:
            reached[p] = max(reached[p], o + 1)
    return {p: range(max(0, committed.get(p, 0)), reached[p]) for p in sorted(wanted)}


def partitions_of(tasks: Iterable[str]) -> set[int]:
    """`{"0_1", "1_3"}` -> `{1, 3}`."""
    return {int(t.split("_")[1]) for t in tasks}


__all__ = [
    "APPS",
    "COMMIT_INTERVAL_S",
    "KAFKA_OPTIONS",
    "Cluster",
    "Feeder",
    "Produced",
    "Producer",
    "Record",
    "WorkerProcess",
    "by_partition",
    "committed_offsets",
    "create_topic",
    "end_offsets",
    "ends_of",
    "partition_of",
    "partitions_of",
    "produce",
    "read_topic",
    "servers",
    "uncommitted_window",
    "wait_for_commits",
    "wait_until",
]
