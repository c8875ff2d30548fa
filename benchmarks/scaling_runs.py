"""The scaling workloads of issue 14: `--processes 2` against one worker, and the
output gap of a stateful app when a second worker joins, with and without warm-ups.

- **processes**: one `streamkit worker ... --processes 2` (a supervisor and two
  passthrough workers sharing a data dir) over the pre-filled input; records/s,
  compared in the report with the one-worker passthrough of the same run.
- **warmup_join**: the count app with 200,000 keys in its table (200,000 inputs,
  one per key, processed by a first worker); then, under a paced load, a second
  worker with a data dir of its own joins. Output arrival times are taken per
  partition (output partition p is task 0_p's): the longest gap on the partitions
  whose task moved to the newcomer against the longest on those that stayed (the
  eager rebalance pauses every task: the stayed ones' gap is the rebalance alone).
  Once with warm-ups (`max_warmup_replicas=2`, the default) and once without (0):
  without, the moved tasks restore half the table inside their gap; with, the
  newcomer warms copies while the old owner goes on, and restores only the tail
  at the hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .data import payments, user_id
from .kafka import BenchError, PacedProducer, create_topics, fill, servers
from .procs import Proc

if TYPE_CHECKING:
    from .runs import Run

TABLE_KEYS = 200_000
JOIN_RATE = 1_000  # offered records/s while the second worker joins
STEADY_S = 2.0  # load before the second worker starts
SETTLE_S = 3.0  # load kept on after it owns its tasks


async def processes(run: Run) -> dict[str, Any]:
    """A supervisor with two passthrough workers; the median of `repeats` runs."""
    from .runs import cpu_text, median_run, say

    results = []
    for i in range(run.cfg.repeats):
        observer = await run.observe(run.name(f"procs-{i}-out"))
        supervisor = run.worker(
            f"procs-{i}",
            "passthrough",
            run.name(f"procs-{i}"),
            observer.topic,
            log_level="info",
            extra_args=("--processes", "2"),
        )
        try:
            result = await run._timed(
                observer, [supervisor], "processes", alive=run._alive(supervisor)
            )
        finally:
            await run._stop(supervisor)
            await observer.stop()
        result.update(run._rate(observer, run.cfg.records, result))
        del result["cpu_us_per_record"]  # the supervisor's alone: its workers are its children
        # A rebalance between the two workers at the start may replay: counted.
        result.update(
            await run._read_back(
                f"procs-{i}", observer.topic, run.expected("passthrough"), replays_allowed=True
            )
        )
        results.append(result)
    best = median_run(results)
    say(
        f"--processes 2: {best['records_per_s']:,.0f} records/s (median of {len(results)}); "
        f"{cpu_text(best['cpu_cores'])}"
    )
    return best


@dataclass
class PartitionArrivals:
    """When outputs arrived, per partition: an aiokafka consumer from the topic's end."""

    url: str
    topic: str
    partitions: int
    arrivals: dict[int, list[float]] = field(default_factory=dict)
    count: int = 0
    _consumer: AIOKafkaConsumer | None = None
    _job: asyncio.Task[None] | None = None

    async def start(self) -> PartitionArrivals:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers(self.url), enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve the end before anything new arrives
        self._consumer = consumer
        self._job = asyncio.create_task(self._read(), name=f"arrivals {self.topic}")
        return self

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100, max_records=100_000)
            now = time.monotonic()
            for tp, records in fetched.items():
                self.arrivals.setdefault(tp.partition, []).append(now)
                self.count += len(records)

    def longest_gap(self, partitions: set[int], start: float, end: float) -> float:
        gaps = [
            b - a
            for p in partitions
            for a, b in itertools.pairwise(self.arrivals.get(p, []))
            if b > start and a < end
        ]
        return max(gaps, default=float("nan"))

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
        if self._consumer is not None:
            await self._consumer.stop()


async def warmup_join(run: Run) -> dict[str, Any]:
    """The join of a second worker to a stateful app, with warm-ups and without."""
    from .runs import say

    out = {}
    for label, warmups in (("with_warmups", 2), ("without_warmups", 0)):
        out[label] = result = await _join(run, label, warmups)
        say(
            f"stateful join {label.replace('_', ' ')}: moved tasks' longest output gap "
            f"{result['moved_gap_s']:.2f} s, stayed tasks' {result['stayed_gap_s']:.2f} s "
            f"(the rebalance); the newcomer restored {result['restored_records']:,} records "
            f"at the hand-over in {result['restore_s']:.2f} s, owned tasks "
            f"{result['handover_after_s']:.1f} s after its launch"
        )
    return out


async def _join(run: Run, label: str, max_warmups: int) -> dict[str, Any]:
    from .runs import OWNS, RESTORED

    cfg = run.cfg
    app_id = run.name(f"join-{label}")
    source, sink = run.name(f"join-{label}-in"), run.name(f"join-{label}-out")
    await create_topics(run.url, [source], cfg.partitions)
    await fill(run.url, source, cfg.partitions, payments(TABLE_KEYS, TABLE_KEYS))
    env = {"STREAMKIT_MAX_WARMUP_REPLICAS": str(max_warmups)}
    observer = await run.observe(sink)

    def start(n: int) -> Proc:
        return run.worker(
            f"join-{label}-{n}", "count", app_id, sink, input_topic=source, extra_env=env,
            log_level="info",
        )  # fmt: skip

    first = start(1)
    second = None
    producer = None
    arrivals = None
    try:
        await observer.wait_for(
            TABLE_KEYS, timeout=cfg.phase_timeout_s, alive=run._alive(first), what="table fill"
        )
        arrivals = await PartitionArrivals(run.url, sink, cfg.partitions).start()
        keys = [user_id(k).encode() for k in range(TABLE_KEYS)]
        producer = PacedProducer(
            run.url, source, cfg.partitions, keys, JOIN_RATE, cfg.latency_tick_s
        ).start()
        await _load_for(STEADY_S, producer, run._alive(first))
        joined_at = time.monotonic()
        second = start(2)
        await run._owns_tasks(second, alive=run._alive(first), check=producer.check)
        owned_at = time.monotonic()
        await _load_for(SETTLE_S, producer, run._alive(first, second))
        await producer.stop()
        ended = time.monotonic()
        await observer.wait_for(
            TABLE_KEYS + producer.sent,
            timeout=cfg.phase_timeout_s,
            alive=run._alive(first, second),
            what=f"stateful join {label}",
        )
    finally:
        await run._stop(*(w for w in (first, second) if w is not None))
        with contextlib.suppress(Exception):
            if producer is not None and not producer.stopped:
                await producer.stop()
        if arrivals is not None:
            await arrivals.stop()
        await observer.stop()
    assert second is not None and arrivals is not None
    moved = {
        int(t.split("_")[1]) for m in OWNS.findall(second.log()) for t in m.split() if t != "none"
    }
    if not moved:
        raise BenchError(f"stateful join {label}: the second worker never owned a task")
    restores = [
        (int(n), float(secs))
        for task, n, _, secs in RESTORED.findall(second.log())
        if int(task.split("_")[1]) in moved
    ]
    stayed = set(range(cfg.partitions)) - moved
    return {
        "table_keys": TABLE_KEYS,
        "offered_records_per_s": JOIN_RATE,
        "max_warmup_replicas": max_warmups,
        "moved_tasks": len(moved),
        "moved_gap_s": arrivals.longest_gap(moved, joined_at, ended),
        "stayed_gap_s": arrivals.longest_gap(stayed, joined_at, ended),
        "restored_records": sum(n for n, _ in restores),
        "restore_s": max((s for _, s in restores), default=0.0),
        "handover_after_s": owned_at - joined_at,
    }


async def _load_for(seconds: float, producer: PacedProducer, alive: Any) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        alive()
        producer.check()
        await asyncio.sleep(0.1)
