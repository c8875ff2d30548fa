"""Test an app's topology without a broker or a network: `TopologyTestDriver`.

In the spirit of Kafka Streams' TopologyTestDriver: pipe records (with event
timestamps) into input topics, advance wall-clock time, read what the app wrote
and what its stores hold. Every task of the topology runs in this process, on a
private in-memory log, through the same Task code a worker runs: serdes, stores,
changelogs, repartition topics and error policies included. Each piped record is
processed to the end (through repartition topics too) and committed before
`pipe` returns, so assertions need no waiting.

The driver runs its own event loop: use it from plain (non-async) tests.

    with TopologyTestDriver(app) as driver:
        driver.pipe(orders, key="o1", value=order, timestamp_ms=1_000)
        assert driver.read_output(enriched) == [("o1", ...)]
        assert driver.store("counts") == {"alice": 1}
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .app import App
from .errors import ConfigError
from .runtime.failures import FailureRouter
from .runtime.global_tables import GlobalTables
from .runtime.record_writer import RecordWriter
from .runtime.task import Task, TaskServices
from .runtime.topic_admin import ensure_topics
from .settings import make_settings
from .state.timestamped import ValueAndTimestamp
from .topic import Topic
from .topology import Topology
from .transport.base import Consumer, Headers, Producer, RawRecord, TopicPartition
from .transport.memory import MemoryBroker, MemoryTransport


@dataclass(frozen=True)
class OutputRecord:
    key: Any
    value: Any
    timestamp: int
    headers: Headers
    partition: int


class _RecordingProducer(Producer):
    """The memory producer, plus the order records were sent in across partitions."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner
        self.sent: dict[str, list[tuple[int, bytes | None, bytes | None, Headers, int]]] = {}

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        self.inner.send(topic, partition, key, value, headers, timestamp_ms)
        self.sent.setdefault(topic, []).append((partition, key, value, headers, timestamp_ms))

    async def flush(self) -> Mapping[TopicPartition, int]:
        return await self.inner.flush()


class _NoGroup(Consumer):
    """Tasks commit through this; the driver itself decides what each task gets."""

    def __init__(self, broker: MemoryBroker, group: str) -> None:
        self._broker = broker
        self._group = group

    async def start(self, topics: Sequence[str], listener: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def getmany(
        self, timeout_s: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        return {}

    def pause(self, tp: TopicPartition) -> None:
        return None

    def resume(self, tp: TopicPartition) -> None:
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        return None

    def request_rejoin(self) -> None:
        return None  # no group: nothing to plan again

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._broker.commit(self._group, offsets)

    def quiet_for(self, tp: TopicPartition) -> float:
        return math.inf  # every piped record is processed before `pipe` returns

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._broker.committed(self._group, tp)


class TopologyTestDriver:
    def __init__(
        self,
        app: App,
        *,
        wall_clock_ms: int = 0,
        data_dir: str | Path | None = None,
    ) -> None:
        self.app = app
        self._wall_ms = wall_clock_ms
        self._owns_dir = data_dir is None
        self._dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp("-streamkit"))
        self._url = f"memory://streamkit-testing-{uuid.uuid4().hex}"
        self.broker = MemoryBroker.for_url(self._url)
        self._loop = asyncio.Runner()
        self._read: dict[str, int] = {}
        self._delivered: dict[TopicPartition, int] = {}
        self._closed = False
        self._tasks: dict[Any, Task] = {}
        try:
            self._loop.run(self._open())
        except BaseException:
            self._release()
            raise

    # Setup --------------------------------------------------------------------

    async def _open(self) -> None:
        app = self.app
        settings = make_settings(app.settings, broker=self._url, data_dir=self._dir)
        transport = MemoryTransport(self._url)
        admin = transport.admin()
        await ensure_topics(admin, app.all_topics())
        self.topology: Topology = app.topology()
        await ensure_topics(admin, self.topology.internal_topics())
        self._producer = _RecordingProducer(transport.producer())
        await self._producer.start()
        self.writer = writer = RecordWriter(self._producer)
        services = TaskServices(
            transport=transport,
            consumer=_NoGroup(self.broker, app.id),
            writer=writer,
            failures=FailureRouter(app.dead_letter_topic_if_used(), writer, app.metrics),
            metrics=app.metrics,
            settings=settings,
            state_dir=self._dir / app.id,
            app_id=app.id,
            wall_clock=lambda: self._wall_ms,
            restore_listener=app.restore_listener,
        )
        app._attach(self)  # type: ignore[arg-type]  # app.send inside agents writes here
        self._globals = GlobalTables(app.global_tables.values(), services)
        await self._globals.load()
        for sub in self.topology.subtopologies:
            for task_id in sub.task_ids():
                task = Task(task_id, sub, sub.partitions_of(task_id), services)
                self._tasks[task_id] = task
                await task.open()

    # What app.send and app.stop reach while the driver is attached ---------------

    def stop(self) -> None:
        """app.stop() inside a driven app: nothing to stop, every call runs to its end."""

    # Input ----------------------------------------------------------------------

    def pipe(
        self,
        topic: Topic | str,
        key: Any = None,
        value: Any = None,
        *,
        timestamp_ms: int | None = None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        """Produce one record to an input topic and process it (and all it causes) now.

        Without `timestamp_ms` the record gets the driver's wall-clock time.
        """
        self._check_open()
        topic = self._topic(topic)
        ts = self._wall_ms if timestamp_ms is None else timestamp_ms
        self.writer.write(topic, key, value, headers, ts, partition)
        self._loop.run(self._drain())

    def pipe_raw(
        self,
        topic: Topic | str,
        key: bytes | None = None,
        value: bytes | None = None,
        *,
        timestamp_ms: int | None = None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        """Produce bytes as they are, unchecked by the topic's serdes, and process them:
        input that fails to deserialize, to test the topic's `on_error` (a `fail`
        policy raises BadInputError here; dead letters can be read from `{app_id}-dlq`).
        """
        self._check_open()
        topic = self._topic(topic)
        ts = self._wall_ms if timestamp_ms is None else timestamp_ms
        self.writer.write_raw(topic, key, value, headers, ts, partition)
        self._loop.run(self._drain())

    def pipe_many(
        self,
        topic: Topic | str,
        records: Iterable[tuple[Any, Any] | tuple[Any, Any, int]],
    ) -> None:
        """Pipe `(key, value)` or `(key, value, timestamp_ms)` records, in order."""
        for record in records:
            if len(record) == 3:
                key, value, ts = record
                self.pipe(topic, key, value, timestamp_ms=ts)
            else:
                key, value = record[0], record[1]
                self.pipe(topic, key, value)

    def advance_wall_clock(self, seconds: float) -> None:
        """Move wall-clock time on and fire the punctuations that became due."""
        self._check_open()
        self._wall_ms += int(seconds * 1000)
        self._loop.run(self._punctuate())

    @property
    def wall_clock_ms(self) -> int:
        return self._wall_ms

    async def _punctuate(self) -> None:
        for task in self._tasks.values():
            task.punctuate_wall_clock()
        await self._drain()

    async def _drain(self) -> None:
        """Deliver every record not yet processed, until no task writes anything new."""
        sources = {t.name for t in self.topology.subtopologies for t in t.sources}
        while True:
            await self.writer.flush()
            await self._globals.catch_up()  # global tables first: they serve every task
            delivered = False
            for name in sorted(sources):
                count = self.broker.partition_count(name) or 0
                for p in range(count):
                    tp = TopicPartition(name, p)
                    start = self._delivered.get(tp, 0)
                    records, self._delivered[tp] = self.broker.read(tp, start, 1_000_000)
                    if not records:
                        continue
                    task = self._tasks[self.topology.task_id_for(tp)]
                    for record in records:
                        await task.process_records(tp, [record])
                    delivered = True
            if not delivered:
                break
        for task in self._tasks.values():
            await task.commit()

    # Output -------------------------------------------------------------------------

    def read_records(self, topic: Topic | str) -> list[OutputRecord]:
        """Records written to the topic since the last read, in the order they were sent."""
        topic = self._topic(topic)
        sent = self._producer.sent.get(topic.name, [])
        start = self._read.get(topic.name, 0)
        self._read[topic.name] = len(sent)
        out = []
        for partition, key, value, headers, ts in sent[start:]:
            out.append(
                OutputRecord(
                    topic.key_serde.deserialize(key),
                    topic.value_serde.deserialize(value),
                    ts,
                    headers,
                    partition,
                )
            )
        return out

    def read_output(self, topic: Topic | str) -> list[tuple[Any, Any]]:
        """`(key, value)` of the records written since the last read."""
        return [(r.key, r.value) for r in self.read_records(topic)]

    def read_values(self, topic: Topic | str) -> list[Any]:
        return [r.value for r in self.read_records(topic)]

    def store(self, name: str) -> dict[Any, Any]:
        """A store's contents across every task, as a dict (windowed stores by
        `Windowed(key, start_ms, end_ms)`); values alone, without their timestamps."""
        table = self.app.tables.get(name)
        if table is None or not table.timestamped:
            return self._rows(name)
        return {key: row.value for key, row in self.timestamped_store(name).items()}

    def timestamped_store(self, name: str) -> dict[Any, ValueAndTimestamp]:
        """A store's rows with the timestamp each keeps (Kafka's timestamped stores):
        an aggregate's latest record time, a KTable row's record time (a versioned
        table's latest version)."""
        rows = self._rows(name)
        table = self.app.tables.get(name)
        if table is None or not table.timestamped:
            raise ConfigError(f"store {name!r} keeps no timestamps; store(name) reads it")
        views = ((key, table.row_view(row)) for key, row in rows.items())
        return {key: view for key, view in views if view is not None}

    def _rows(self, name: str) -> dict[Any, Any]:
        self._check_open()
        if name in self.app.global_tables:
            return dict(self.app.global_tables[name].store.items())
        table = self.app.tables.get(name)
        if table is None:
            names = sorted([*self.app.tables, *self.app.global_tables])
            raise ConfigError(f"no store named {name!r}; stores: {', '.join(names) or 'none'}")
        merged: dict[Any, Any] = {}
        for task in self._tasks.values():
            shard = task.stores().get(name)
            if shard is not None:
                merged.update(shard.range(None, None))
        return merged

    # Lifecycle --------------------------------------------------------------------

    def _topic(self, topic: Topic | str) -> Topic:
        if isinstance(topic, Topic):
            return topic
        found = self.app.topics.get(topic) or self.topology_topic(topic)
        if found is None:
            raise ConfigError(f"unknown topic {topic!r}: declare it with app.topic()")
        return found

    def topology_topic(self, name: str) -> Topic | None:
        for t in self.topology.internal_topics():
            if t.name == name:
                return t
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the test driver is closed")

    def close(self) -> None:
        """Close every task (processors' close(), a last commit) and delete the state."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._close_tasks())
        finally:
            self._release()

    async def _close_tasks(self) -> None:
        try:
            for task in self._tasks.values():
                await task.close()
        finally:
            for task in self._tasks.values():
                task.release()
            await self._globals.stop()

    def _release(self) -> None:
        self.app._detach(self)  # type: ignore[arg-type]
        self._loop.close()
        MemoryBroker.reset(self.broker.name)
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> TopologyTestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
