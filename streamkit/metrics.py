"""Every metric of an app, in the app's own prometheus_client registry.

One registry per app, so two apps in one process never mix; `value()` reads a
metric back without an HTTP scrape, and `serve()` (the worker's `metrics_port`)
exposes it to Prometheus. Names follow Prometheus' conventions: counters end in
`_total`, durations are histograms in seconds, sizes are in bytes. docs/operating.md
lists them all with their labels.

Nothing here runs per record. Counters and histograms are updated once per batch,
commit, restore batch or rebalance; what only matters when someone looks (consumer
lag, queued records, store sizes, event-loop lag) is read from the running worker at
scrape time by `LiveCollector`, through the `LiveReadings` the worker attaches.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .state.restore_listener import RestoreListener

if TYPE_CHECKING:
    from .topology import TaskId
    from .transport.base import TopicPartition

# Seconds: a batch takes from well under a millisecond to a second or more.
_BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A commit waits for the broker's acknowledgements: milliseconds to seconds.
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A rebalance includes the group join: Tansu holds a first join for seconds.
_REBALANCE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class PartitionLag(NamedTuple):
    task: str
    topic: str
    partition: int
    lag: int


class StoreFile(NamedTuple):
    task: str
    store: str
    role: str  # "active" or "standby"
    path: Path


class LiveReadings(Protocol):
    """What a running worker shows at scrape time (runtime/live_readings.py)."""

    def partition_lags(self) -> Iterable[PartitionLag]: ...
    def queued_records(self) -> Iterable[tuple[str, int]]: ...
    def paused_partitions(self) -> int: ...
    def store_files(self) -> Iterable[StoreFile]: ...
    def event_loop_lag_s(self) -> float: ...


class LiveCollector(Collector):
    """Gauges read from the attached worker when the registry is collected.

    A scrape may come from another thread (the `metrics_port` server's): the
    readings take copies of what they walk, and a store's keys are counted over a
    read-only connection of the scrape's own, so that the worker's connection is
    never shared.
    """

    def __init__(self) -> None:
        self.readings: LiveReadings | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        try:
            return self._families(self.readings)
        except RuntimeError:
            # A dict the worker changed while a scrape's thread walked it (a rebalance):
            # the next look sees it settled.
            return self._families(self.readings)

    def _families(self, readings: LiveReadings | None = None) -> list[Metric]:
        lag = GaugeMetricFamily(
            "streamkit_consumer_lag_records",
            "Records of an input partition not yet processed: its end offset (high "
            "watermark, or last stable offset under exactly-once) minus the task's position",
            labels=["task", "topic", "partition"],
        )
        queued = GaugeMetricFamily(
            "streamkit_queued_records",
            "Records fetched and waiting in a task's partition queues (bounded: "
            "partition_buffer_records per partition)",
            labels=["task"],
        )
        paused = GaugeMetricFamily(
            "streamkit_paused_partitions",
            "Partitions paused because their queue is full (back-pressure)",
        )
        keys = GaugeMetricFamily(
            "streamkit_store_keys",
            "Keys in a store's state file, as of its last commit",
            labels=["task", "store", "role"],
        )
        size = GaugeMetricFamily(
            "streamkit_store_size_bytes",
            "Bytes on disk of a store's state file with its write-ahead log",
            labels=["task", "store", "role"],
        )
        loop_lag = GaugeMetricFamily(
            "streamkit_event_loop_lag_seconds",
            "How late the event loop last woke for a timer, or how long it has been blocked",
        )
        families: list[Metric] = [lag, queued, paused, keys, size, loop_lag]
        if readings is None:
            return families
        for reading in readings.partition_lags():
            lag.add_metric([reading.task, reading.topic, str(reading.partition)], reading.lag)
        for task, count in readings.queued_records():
            queued.add_metric([task], count)
        paused.add_metric([], readings.paused_partitions())
        for store in readings.store_files():
            counted = _count_keys(store.path)
            if counted is not None:
                keys.add_metric([store.task, store.store, store.role], counted)
            size.add_metric([store.task, store.store, store.role], _size_on_disk(store.path))
        loop_lag.add_metric([], readings.event_loop_lag_s())
        return families


def _count_keys(path: Path) -> int | None:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)) as db:
            return int(db.execute("SELECT count(*) FROM kv").fetchone()[0])
    except sqlite3.Error:
        return None  # not created yet, or being replaced


def _size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with suppress(OSError):  # not created yet, or checkpointed away
            total += os.stat(f"{path}{suffix}").st_size
    return total


class RestoreMetrics(RestoreListener):
    """Counts a task's restores into `restored_records`, `restore_remaining_records`
    and `restore_records_per_second`; or, for a standby, `standby_lag_records`."""

    def __init__(self, metrics: Metrics, standby: bool = False) -> None:
        self._metrics = metrics
        self._standby = standby
        # (task, store) -> the restore's end offset, when it began, records applied.
        self._ongoing: dict[tuple[TaskId, str], tuple[int, float, int]] = {}

    async def on_restore_start(
        self,
        task: TaskId,
        store: str,
        changelog: TopicPartition,
        start_offset: int,
        end_offset: int,
    ) -> None:
        self._ongoing[task, store] = (end_offset, time.monotonic(), 0)
        self._gauge(task, store).set(max(0, end_offset - start_offset))

    async def on_batch_restored(
        self, task: TaskId, store: str, changelog: TopicPartition, batch_end_offset: int, count: int
    ) -> None:
        end, began, applied = self._ongoing.get((task, store), (0, time.monotonic(), 0))
        applied += count
        self._ongoing[task, store] = (end, began, applied)
        # The end may be under-reported (Tansu): a restore reads past it, never below 0.
        self._gauge(task, store).set(max(0, end - batch_end_offset))
        self._metrics.restored_records.labels(str(task), store).inc(count)
        elapsed = time.monotonic() - began
        if not self._standby and elapsed > 0:
            self._metrics.restore_rate.labels(str(task), store).set(applied / elapsed)

    async def on_restore_end(
        self, task: TaskId, store: str, changelog: TopicPartition, total_restored: int
    ) -> None:
        self._ongoing.pop((task, store), None)
        self._gauge(task, store).set(0)

    def _gauge(self, task: TaskId, store: str) -> Gauge:
        gauge = self._metrics.standby_lag if self._standby else self._metrics.restore_remaining
        return gauge.labels(str(task), store)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.records_processed = Counter(
            "streamkit_records_processed",
            "Input records done with: processed, or routed by their error policy",
            ["topic", "task"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "streamkit_batch_processing_seconds",
            "Time a task took to run one batch of input through its agents and processors",
            ["task"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "streamkit_commit_seconds",
            "Time a task's commit took (changelogs, outputs acknowledged, offsets); "
            "its _count is the number of commits",
            ["task"],
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.rebalance_seconds = Histogram(
            "streamkit_rebalance_seconds",
            "Time from the start of a rebalance (partitions revoked, or the group join) "
            "to this worker's tasks being made; its _count is the number of rebalances",
            buckets=_REBALANCE_BUCKETS,
            registry=registry,
        )
        self.restored_records = Counter(
            "streamkit_restored_records",
            "Changelog records replayed into a store, by active restores and standbys",
            ["task", "store"],
            registry=registry,
        )
        self.restore_remaining = Gauge(
            "streamkit_restore_remaining_records",
            "Changelog records an active task's store still has to replay before the task "
            "processes input (0 once restored)",
            ["task", "store"],
            registry=registry,
        )
        self.restore_rate = Gauge(
            "streamkit_restore_records_per_second",
            "Records per second of a store's ongoing (or last) restore",
            ["task", "store"],
            registry=registry,
        )
        self.standby_lag = Gauge(
            "streamkit_standby_lag_records",
            "Changelog records a standby copy of a store was behind at its last look",
            ["task", "store"],
            registry=registry,
        )
        self.bad_records = Counter(
            "streamkit_bad_records",
            "Records that failed to deserialize or validate, by policy",
            ["topic", "policy"],
            registry=registry,
        )
        self.agent_errors = Counter(
            "streamkit_agent_errors",
            "Records on which an agent or processor raised, by policy",
            ["agent", "policy"],
            registry=registry,
        )
        self.skipped_records = Counter(
            "streamkit_skipped_records",
            "Records logged and skipped under on_error='skip' (bad input or a raising agent)",
            ["topic"],
            registry=registry,
        )
        self.dead_lettered_records = Counter(
            "streamkit_dead_lettered_records",
            "Records sent to the dead-letter topic under on_error='dead_letter'",
            ["topic"],
            registry=registry,
        )
        self.dropped_records = Counter(
            "streamkit_dropped_records",
            "Records a processor could not use (late for their window, null key), by reason",
            ["node", "reason"],
            registry=registry,
        )
        self.producer_errors = Counter(
            "streamkit_producer_errors",
            "Deliveries (record batches) the broker did not acknowledge, by topic",
            ["topic"],
            registry=registry,
        )
        self.live = LiveCollector()
        registry.register(self.live)
        ProcessCollector(registry=registry)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {
            m._name: m for m in vars(self).values() if isinstance(m, Counter | Gauge | Histogram)
        }

    def producer_failed(self, topic: str) -> None:
        """A producer's `on_delivery_failure`: one delivery to `topic` failed."""
        self.producer_errors.labels(topic).inc()

    def restore_listener(self, *, standby: bool = False) -> RestoreMetrics:
        return RestoreMetrics(self, standby)

    def serve(self, port: int) -> WSGIServer:
        """Serve `/metrics` for Prometheus on a background thread; shut it down after."""
        server, _thread = start_http_server(port, registry=self.registry)
        return server

    def value(self, name: str, **labels: str) -> float:
        """A metric's value summed over the series whose labels include `labels`:
        `value("bad_records", topic="t", policy="skip")`, or `value("records_processed",
        topic="t")` over every task. Counters go by their name without `streamkit_` and
        `_total`, gauges by theirs, a histogram's parts by `commit_seconds_count` or
        `commit_seconds_sum`; the live gauges too (`value("consumer_lag_records")`)."""
        wanted = (f"streamkit_{name}_total", f"streamkit_{name}")
        total = 0.0
        for family in self._families_for(name):
            for sample in family.samples:
                if sample.name in wanted and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def _families_for(self, name: str) -> Iterable[Metric]:
        """Collect only the metric asked for: a live collection counts store keys."""
        base = name
        for suffix in ("_count", "_sum", "_bucket"):
            if name.endswith(suffix) and f"streamkit_{name.removesuffix(suffix)}" in self._metrics:
                base = name.removesuffix(suffix)
        metric = self._metrics.get(f"streamkit_{base}")
        return metric.collect() if metric is not None else self.live.collect()
