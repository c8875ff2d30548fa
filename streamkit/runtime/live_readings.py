"""What a running worker shows its metrics at scrape time: lag, queues, stores, loop.

These gauges change with every record, and matter only when someone looks; reading
them at scrape time keeps them off the hot path altogether. A scrape may come from
the `metrics_port` server's thread: everything here copies what it walks (a dict
copy holds the GIL throughout) and does no I/O but a stat and a read-only count of
each store file's keys (metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..metrics import PartitionLag, StoreFile
from ..transport.base import Consumer
from .liveness import LoopWatchdog
from .standby import StandbyTask
from .task import Task


class WorkerReadings:
    """`metrics.LiveReadings` over one worker's tasks, standbys, consumer and loop."""

    def __init__(
        self,
        consumer: Consumer,
        tasks: Callable[[], Sequence[Task]],
        standbys: Callable[[], Sequence[StandbyTask]],
        watchdog: Callable[[], LoopWatchdog | None],
    ) -> None:
        self._consumer = consumer
        self._tasks = tasks
        self._standbys = standbys
        self._watchdog = watchdog

    def partition_lags(self) -> Iterable[PartitionLag]:
        """Per input partition: its end as last fetched minus the task's next offset to
        process (the consumer's position until the task has fetched any), so a
        partition whose input stopped drains to 0 once its records are processed."""
        consumer = self._consumer
        for task in self._tasks():
            processed = task.processed_positions()
            for tp in sorted(task.partitions):
                end = consumer.end_offset(tp)
                position = processed.get(tp)
                if position is None:
                    position = consumer.position(tp)
                if end is not None and position is not None:
                    yield PartitionLag(str(task.id), tp.topic, tp.partition, max(0, end - position))

    def queued_records(self) -> Iterable[tuple[str, int]]:
        return [(str(t.id), t.buffered_records()) for t in self._tasks()]

    def paused_partitions(self) -> int:
        return sum(t.paused_partitions() for t in self._tasks())

    def store_files(self) -> Iterable[StoreFile]:
        for task in self._tasks():
            for name, store in dict(task.stores()).items():
                yield StoreFile(str(task.id), name, "active", store.sqlite.path)
        for standby in self._standbys():
            for name, store in dict(standby.readable_stores()).items():
                yield StoreFile(str(standby.id), name, "standby", store.sqlite.path)

    def event_loop_lag_s(self) -> float:
        watchdog = self._watchdog()
        return 0.0 if watchdog is None else watchdog.lag_s()
