"""The benchmark's own Kafka clients: topics, pre-fill, output observers, paced load.

The bench reads the broker the way a user would, with plain aiokafka. Progress is
judged by the high watermark of fetch responses (`consumer.highwater(tp)`), never
by ListOffsets (`end_offsets()`), which Tansu reports as the first offset of the
last batch + 1.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest

from .data import partition_of, stamped


class BenchError(RuntimeError):
    """A run that could not be measured (a worker died, a deadline passed)."""


def servers(url: str) -> str:
    """`kafka://host:port` -> `host:port`."""
    return url.split("://", 1)[-1]


async def create_topics(
    url: str, names: Iterable[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers(url))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs=dict(config or {})) for n in names]
        )
        deadline = time.monotonic() + 20
        while True:
            described = await admin.describe_topics(names)
            if all(d["error_code"] == 0 and len(d["partitions"]) == partitions for d in described):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"topics {names} did not appear in the metadata: {described}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def fill(
    url: str,
    topic: str,
    partitions: int,
    records: Iterable[tuple[bytes, bytes]],
    *,
    routing: Callable[[bytes], bytes] | None = None,
    chunk: int = 500_000,
) -> None:
    """Produce keyed records to their keys' partitions with the batch API; wait for acks.

    `routing` gives the bytes a key is partitioned by when they are not the key's own
    (a window store's changelog routes by the grouped key). Records are sent `chunk`
    at a time, so that a generator of millions never sits in memory whole."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers(url), acks="all", linger_ms=0, max_batch_size=256 * 1024
    )
    await producer.start()

    async def one(partition: int, items: list[tuple[bytes, bytes]]) -> None:
        acks = []
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        batch.close()
        acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)

    try:
        it = iter(records)
        while part := list(itertools.islice(it, chunk)):
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in part:
                routed = key if routing is None else routing(key)
                by_partition.setdefault(partition_of(routed, partitions), []).append((key, value))
            await asyncio.gather(*(one(p, items) for p, items in by_partition.items()))
    finally:
        await producer.stop()


@dataclass
class Observer:
    """Follows a topic from the benchmark process and notes when records appear.

    `marks` holds (monotonic time, records on the broker) each time the count grew.
    With `watermarks_only` the observer reads no records: it sends its own fetch
    requests from each partition's high watermark and notes the new one, which costs
    the benchmark process (sharing the machine with the workers) next to nothing.
    Otherwise it reads records and counts the larger of the records fetched and the
    sum of the high watermarks; `read_records()` switches over, e.g. for latencies.
    With `stamped_after` set, values are parsed and each record whose `timestamp`
    is at or after it gives a latency: wall-clock receive time minus that stamp.
    The topic is assumed empty when the observer starts, unless `from_end`.

    With `committed` (exactly-once outputs; implies `watermarks_only`) it notes each
    partition's last stable offset instead of its high watermark: records count once
    their transaction commits. Offsets then include a commit marker per transaction
    and partition, so `marks` overstate the records until `recount` maps each noted
    end to the records below it, from a committed `OutputReader`'s offsets.
    """

    url: str
    topic: str
    partitions: int
    fetch_wait_ms: int = 20
    from_end: bool = False
    watermarks_only: bool = False
    stamped_after: float | None = None
    keep_values: bool = False
    committed: bool = False
    fetched: int = 0
    values: list[tuple[bytes, bytes]] = field(default_factory=list)  # with keep_values
    per_partition: dict[int, int] = field(default_factory=dict)  # records seen
    marks: list[tuple[float, int]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic times the count grew
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, seconds)
    # With `committed`: (monotonic time, each partition's end) whenever an end grew.
    ends_seen: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _job: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return self.marks[-1][1] if self.marks else 0

    @property
    def first_at(self) -> float | None:
        return self.marks[0][0] if self.marks else None

    def reached_at(self, n: int) -> float | None:
        """When the topic first held at least `n` records."""
        for t, total in self.marks:
            if total >= n:
                return t
        return None

    @property
    def _tps(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in range(self.partitions)]

    async def start(self) -> Observer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers(self.url),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        self._consumer = consumer
        if self.watermarks_only or self.committed:
            self._job = asyncio.create_task(self._watch(), name=f"observer {self.topic}")
            return self
        tps = self._tps
        consumer.assign(tps)
        if self.from_end:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        self._job = asyncio.create_task(self._read(), name=f"observer {self.topic}")
        return self

    async def read_records(self, stamped_after: float | None = None) -> None:
        """From watermarks to records, from where the watermarks are now."""
        assert self._consumer is not None and self._job is not None
        self._job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._job
        self.watermarks_only = False
        self.stamped_after = stamped_after
        self.fetched = sum(self.per_partition.values())
        consumer = self._consumer
        consumer.assign(self._tps)
        for tp in self._tps:
            consumer.seek(tp, self.per_partition.get(tp.partition, 0))
        self._job = asyncio.create_task(self._read(), name=f"observer {self.topic}")

    def _note(self, now: float, total: int) -> None:
        if total > self.count:
            self.marks.append((now, total))
            self.arrivals.append(now)
            self._changed.set()

    async def _watch(self) -> None:
        assert self._consumer is not None
        client = self._consumer._client
        await client._wait_on_metadata(self.topic)
        ends = dict.fromkeys(range(self.partitions), 0)
        by_leader: dict[int, list[int]] = {}
        for tp in self._tps:
            leader = client.cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                raise BenchError(f"no leader for {tp.topic}[{tp.partition}]")
            by_leader.setdefault(leader, []).append(tp.partition)

        isolation = 1 if self.committed else 0  # read_committed : read_uncommitted

        def request(parts: list[int]) -> FetchRequest:
            # From the known end, at most 1 byte: the answer's high watermark (or last
            # stable offset) is the news.
            wanted = [(p, ends[p], 1) for p in parts]
            return FetchRequest(self.fetch_wait_ms, 1, 1, isolation, [(self.topic, wanted)])

        while True:
            responses = await asyncio.gather(
                *(client.send(node, request(parts)) for node, parts in by_leader.items())
            )
            for response in responses:
                for _topic, partitions in response.topics:
                    for partition, error_code, highwater, *rest in partitions:
                        if error_code:
                            raise for_code(error_code)(f"fetch of {self.topic}[{partition}]")
                        # Fetch v4+ answers the last stable offset after the watermark.
                        end = rest[0] if self.committed else highwater
                        ends[partition] = max(ends[partition], int(end))
            self.per_partition = dict(ends)
            now, total = time.monotonic(), sum(ends.values())
            if self.committed and total > self.count:
                self.ends_seen.append((now, dict(ends)))
            self._note(now, total)

    def recount(self, offsets: dict[int, list[int]]) -> None:
        """`marks` from offsets to records: at each noted end, the records below it.

        `offsets` holds each partition's record offsets in order, as a read_committed
        reader got them (markers and aborted records left out)."""
        marks: list[tuple[float, int]] = []
        for at, ends in self.ends_seen:
            total = records_below(ends, offsets)
            if not marks or total > marks[-1][1]:
                marks.append((at, total))
        self.marks = marks
        self.arrivals = [at for at, _ in marks]

    async def _read(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        tps = self._tps
        loads = json.loads
        while True:
            fetched = await consumer.getmany(timeout_ms=100, max_records=100_000)
            now = time.monotonic()
            if fetched:
                wall = time.time()
                for tp, records in fetched.items():
                    self.fetched += len(records)
                    p = tp.partition
                    self.per_partition[p] = self.per_partition.get(p, 0) + len(records)
                    if self.keep_values:
                        self.values.extend((r.key, r.value) for r in records)
                    if self.stamped_after is not None:
                        after = self.stamped_after
                        for r in records:
                            stamp = loads(r.value)["timestamp"]
                            if stamp >= after:
                                self.latencies.append((now, wall - stamp))
            if self.from_end:
                total = self.fetched
            else:
                total = max(self.fetched, sum(consumer.highwater(tp) or 0 for tp in tps))
            self._note(now, total)

    def records_noted(self, offsets: dict[int, list[int]]) -> int:
        """With `committed`: the records below the ends noted last."""
        return records_below(self.ends_seen[-1][1], offsets) if self.ends_seen else 0

    async def wait_for(
        self,
        n: int,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline, polled
        alive: Any = None,
        what: str = "",
    ) -> float:
        """Until the topic holds `n` records; returns when it first did (monotonic).

        `alive()` is called while waiting and may raise (a worker exited)."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if self._job is not None and self._job.done():
                self._job.result()
                raise BenchError(f"observer of {self.topic} stopped")
            if alive is not None:
                alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"{what or self.topic}: {self.count} of {n} records after {timeout:.0f} s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
        at = self.reached_at(n)
        assert at is not None
        return at

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
            self._job = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def records_below(ends: dict[int, int], offsets: dict[int, list[int]]) -> int:
    """How many of the records at `offsets` (per partition, in order) lie below `ends`."""
    return sum(bisect.bisect_left(offsets.get(p, []), end) for p, end in ends.items())


class OutputReader:
    """Reads a topic from the start and keeps every record (offset, key, value) by
    partition, after a run's timed window, to check its outputs. With `committed` it
    reads as a `read_committed` consumer: what a downstream reader of exactly-once
    outputs gets, markers and aborted records left out. Values are kept as bytes and
    parsed only when checked."""

    def __init__(self, url: str, topic: str, partitions: int, *, committed: bool = False) -> None:
        self.topic = topic
        self.committed = committed
        self.records: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {
            p: [] for p in range(partitions)
        }
        self.count = 0
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers(url),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if committed else "read_uncommitted",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )

    async def start(self) -> OutputReader:
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        return self

    def offsets(self) -> dict[int, list[int]]:
        return {p: [r[0] for r in records] for p, records in self.records.items()}

    async def _poll(self) -> None:
        fetched = await self._consumer.getmany(timeout_ms=100, max_records=100_000)
        for tp, records in fetched.items():
            self.records[tp.partition].extend((r.offset, r.key, r.value) for r in records)
            self.count += len(records)

    async def read_until(self, n: int, timeout: float) -> None:  # noqa: ASYNC109 - polled
        """Until `n` records were read (or BenchError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.topic}: {self.count} of {n} records after {timeout:.0f} s")
            await self._poll()

    async def read_to_end(self, timeout: float) -> None:  # noqa: ASYNC109 - polled
        """Until every partition's position reaches its high watermark (for committed
        reads also its last stable offset): for once the writers are gone."""
        consumer = self._consumer
        deadline = time.monotonic() + timeout
        while True:
            await self._poll()
            ends = [(consumer.highwater(tp), consumer.last_stable_offset(tp)) for tp in self._tps]
            positions = [await consumer.position(tp) for tp in self._tps]
            if all(
                hw is not None and (lso == hw or not self.committed) and pos >= hw
                for (hw, lso), pos in zip(ends, positions, strict=True)
            ):
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.topic}: not read to its end after {timeout:.0f} s (high watermark, "
                    f"last stable offset, position per partition: "
                    f"{[(*e, pos) for e, pos in zip(ends, positions, strict=True)]})"
                )

    async def stop(self) -> None:
        await self._consumer.stop()


class PacedProducer:
    """Offers a fixed load: every `tick_s`, one batch per partition of rate * tick_s
    stamped records in all, sent with the batch API (acks are not awaited in line)."""

    def __init__(
        self,
        url: str,
        topic: str,
        partitions: int,
        keys: Sequence[bytes],
        rate: int,
        tick_s: float,
        limit: int | None = None,
    ) -> None:
        self._url = url
        self._limit = limit  # stop by itself after this many records
        self._topic = topic
        self._partitions = partitions
        self._keys = keys
        self._per_tick = max(1, round(rate * tick_s))
        self._tick_s = tick_s
        self._stop = asyncio.Event()
        self._job: asyncio.Task[None] | None = None
        self.sent = 0
        self.late_ticks = 0  # ticks that started more than one tick late

    def start(self) -> PacedProducer:
        self._job = asyncio.create_task(self._run(), name="paced producer")
        return self

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=servers(self._url), acks="all", linger_ms=0)
        await producer.start()
        rng = random.Random(7)
        pending: set[asyncio.Future[Any]] = set()
        try:
            next_tick = time.monotonic()
            while not self._stop.is_set() and (self._limit is None or self.sent < self._limit):
                if time.monotonic() - next_tick > self._tick_s:
                    self.late_ticks += 1
                batches: dict[int, Any] = {}
                for _ in range(self._per_tick):
                    key, value = stamped(self._keys, rng)
                    p = partition_of(key, self._partitions)
                    batch = batches.get(p)
                    if batch is None:
                        batch = batches[p] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                for p, batch in batches.items():
                    batch.close()
                    fut = await producer.send_batch(batch, self._topic, partition=p)
                    pending.add(fut)
                    fut.add_done_callback(pending.discard)
                self.sent += self._per_tick
                next_tick += self._tick_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), max(0.0, next_tick - time.monotonic())
                    )
            if pending:
                await asyncio.gather(*pending)
        finally:
            await producer.stop()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def stop(self) -> None:
        self._stop.set()
        if self._job is not None:
            await self._job

    def check(self) -> None:
        if self._job is not None and self._job.done():
            self._job.result()
            if self._limit is None or self.sent < self._limit:
                raise BenchError("the paced producer stopped early")


async def high_watermarks(url: str, topic: str, partitions: int) -> dict[int, int | None]:
    """Each partition's end as a fetch response reports it (exact, unlike ListOffsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers(url), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


async def committed(url: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """A group's committed offsets, partitions named (Tansu's answer otherwise fails)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers(url))
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        got = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: (got[tp].offset if tp in got else -1) for tp in tps}
    finally:
        await admin.close()


async def stuck_report(
    url: str, group: str, input_topic: str, observer: Observer, partitions: int
) -> str:
    """Per partition: input end, the group's commit, outputs seen (for a wait that failed)."""
    try:
        ends = await high_watermarks(url, input_topic, partitions)
        commits = await committed(url, group, input_topic, partitions)
    except Exception as exc:
        return f"(no partition report: {exc!r})"
    return "; ".join(
        f"partition {p}: input end {ends[p]}, committed {commits[p]}, "
        f"outputs seen {observer.per_partition.get(p, 0)}"
        for p in range(partitions)
    )


async def measure_group_join(url: str, topic: str, group: str, options: dict[str, int]) -> float:
    """Seconds from a bare aiokafka consumer's start to its first records in a new group:
    what the broker makes any new group member wait (Tansu holds a new group's first join
    for half the session timeout)."""
    began = time.monotonic()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers(url),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    try:
        while not await consumer.getmany(timeout_ms=100, max_records=1):
            if time.monotonic() - began > 60:
                raise BenchError(f"a bare consumer of group {group} got nothing in 60 s")
        return time.monotonic() - began
    finally:
        await consumer.stop()
