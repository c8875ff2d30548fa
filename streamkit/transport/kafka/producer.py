"""The batch producer: builds record batches itself and hands aiokafka whole batches."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from ...errors import TransportError
from ..base import Headers, Producer, TopicPartition
from .options import KafkaOptions, _connect, _describe, _guard

log = logging.getLogger(__name__)

_Key = tuple[str, int]
_NO_HEADERS: list[tuple[str, bytes]] = []


class KafkaProducer(Producer):
    """Builds one record batch per partition and hands aiokafka whole batches.

    `send` only appends to the open batch of its partition. A batch goes out when
    it is full, when it has lingered `linger_ms`, or at `flush`. Each partition
    has at most one coroutine (its pump) submitting batches, one after the
    other: aiokafka's accumulator holds one queued batch per partition and its
    sender has one request per partition in flight, re-queueing a retried batch
    at the front, so batches reach the log in the order we sealed them.

    `flush` returns, per partition, the offset after the last acknowledged
    record: the broker acknowledges a batch with its base offset, and each
    pump knows how many records the batch held.
    """

    def __init__(self, url: str, servers: list[str], options: KafkaOptions) -> None:
        self._url = url
        self._servers = servers
        self._options = options
        self._linger_s = options.linger_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[_Key, BatchBuilder] = {}
        self._sealed: dict[_Key, collections.deque[tuple[BatchBuilder, asyncio.Future[None]]]] = {}
        self._pumps: dict[_Key, asyncio.Task[None]] = {}
        self._outstanding: list[asyncio.Future[None]] = []
        self._errors: dict[_Key, BaseException] = {}
        # Per partition, the offset after the last record the broker acknowledged.
        self._acked: dict[TopicPartition, int] = {}
        self._dirty = asyncio.Event()
        self._linger_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def raw(self) -> AIOKafkaProducer:
        """The aiokafka producer, for what the transport seam does not cover yet."""
        if self._producer is None:
            raise TransportError(f"broker {self._url}: producer is not started")
        return self._producer

    def _make_client(self) -> AIOKafkaProducer:
        """The aiokafka producer `start` connects; the transactional one adds its id."""
        return AIOKafkaProducer(bootstrap_servers=self._servers, **self._options.producer())

    async def _submit(
        self, producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        """Hand one sealed batch to aiokafka; the transactional producer first makes
        sure a transaction is open, as aiokafka refuses batches outside one."""
        return await producer.send_batch(batch, topic, partition=partition)

    async def start(self) -> None:
        producer = self._make_client()
        await _connect(self._url, "connecting producer", producer.start, producer.stop)
        self._producer = producer
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._linger_task = self._loop.create_task(self._linger(), name="streamkit-linger")

    async def stop(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            self._seal_all()
            if self._outstanding:
                await asyncio.wait(self._outstanding)
        finally:
            self._producer = None
            if self._linger_task is not None:
                self._linger_task.cancel()
                await asyncio.gather(self._linger_task, return_exceptions=True)
                self._linger_task = None
            await _guard(self._url, "stopping producer", producer.stop())
        if self._errors:
            log.warning("producer stopped with undelivered records: %s", self._error_text())
            self._errors.clear()

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        batch_key = (topic, partition)
        if headers.__class__ is not list:
            # aiokafka's compiled batch builder takes only lists (and never keeps them).
            headers = list(headers) if headers else _NO_HEADERS
        batch = self._open.get(batch_key)
        if batch is None:
            batch = self._open[batch_key] = self.raw.create_batch()
            self._dirty.set()
        if batch.append(timestamp=timestamp_ms, key=key, value=value, headers=headers) is None:
            # Full: seal it and start a new one. A record that alone exceeds
            # max_batch_size still fits an empty batch (aiokafka always takes the
            # first record) and the broker judges its size.
            self._seal(batch_key, batch)
            batch = self._open[batch_key] = self.raw.create_batch()
            self._dirty.set()
            batch.append(timestamp=timestamp_ms, key=key, value=value, headers=headers)

    async def flush(self) -> Mapping[TopicPartition, int]:
        """Wait for every batch sealed so far, whoever sealed it.

        Several tasks flush the one producer at once: each must wait for all
        deliveries outstanding at its call, including batches another flush sealed,
        or it could commit offsets whose outputs are not acknowledged. A failed
        delivery stays reported to every later flush: records were lost, so no task
        of this worker may commit past them (the worker stops; its successor retries
        from the last commit).
        """
        self._seal_all()
        snapshot = list(self._outstanding)
        if snapshot:
            await asyncio.wait(snapshot)
            self._outstanding = [f for f in self._outstanding if not f.done()]
        if self._errors:
            first = next(iter(self._errors.values()))
            raise TransportError(self._error_text()) from first
        # A copy: deliveries of batches sealed after this call go on updating ours.
        return dict(self._acked)

    def _error_text(self) -> str:
        (topic, partition), error = next(iter(self._errors.items()))
        others = len(self._errors) - 1
        more = f" (and {others} more partition(s))" if others else ""
        text = error if isinstance(error, TransportError) else _describe(error)
        return f"broker {self._url}: producing to {topic}[{partition}] failed: {text}{more}"

    async def _linger(self) -> None:
        # Sleeps while nothing is open, so an idle producer costs no wake-ups.
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._linger_s)
            self._dirty.clear()
            self._seal_all()

    def _seal_all(self) -> None:
        open_batches, self._open = self._open, {}
        for batch_key, batch in open_batches.items():
            if batch.record_count():
                self._seal(batch_key, batch)

    def _seal(self, batch_key: _Key, batch: BatchBuilder) -> None:
        assert self._loop is not None
        batch.close()
        done: asyncio.Future[None] = self._loop.create_future()
        self._outstanding.append(done)
        queue = self._sealed.get(batch_key)
        if queue is None:
            queue = self._sealed[batch_key] = collections.deque()
        queue.append((batch, done))
        if batch_key not in self._pumps:
            self._pumps[batch_key] = self._loop.create_task(self._pump(batch_key, queue))

    async def _pump(
        self,
        batch_key: _Key,
        queue: collections.deque[tuple[BatchBuilder, asyncio.Future[None]]],
    ) -> None:
        topic, partition = batch_key
        try:
            while queue:
                batch, done = queue.popleft()
                try:
                    producer = self.raw
                    partitions = await producer.partitions_for(topic)
                    if partition not in partitions:
                        raise TransportError(
                            f"topic {topic!r} has {len(partitions)} partitions, "
                            f"no partition {partition}"
                        )
                    delivery = await self._submit(producer, batch, topic, partition)
                except Exception as exc:
                    self._fail(batch_key, done, exc)
                    # The partition's later batches would land after a gap: drop
                    # them too, flush reports the partition as failed.
                    while queue:
                        self._fail(batch_key, queue.popleft()[1], exc)
                    continue
                count = batch.record_count()
                delivery.add_done_callback(
                    lambda fut, done=done, count=count: self._delivered(batch_key, count, done, fut)
                )
        finally:
            if self._pumps.get(batch_key) is asyncio.current_task():
                del self._pumps[batch_key]
            if not queue:
                self._sealed.pop(batch_key, None)

    def _delivered(
        self,
        batch_key: _Key,
        count: int,
        done: asyncio.Future[None],
        fut: asyncio.Future[RecordMetadata],
    ) -> None:
        if fut.cancelled():
            self._fail(batch_key, done, asyncio.CancelledError("delivery cancelled"))
        elif (error := fut.exception()) is not None:
            self._fail(batch_key, done, error)
        else:
            # A batch's metadata carries its base offset: its records follow it.
            end = fut.result().offset + count
            tp = TopicPartition(*batch_key)
            if end > self._acked.get(tp, 0):
                self._acked[tp] = end
            if not done.done():
                done.set_result(None)

    def _fail(self, batch_key: _Key, done: asyncio.Future[None], error: BaseException) -> None:
        self._errors.setdefault(batch_key, error)
        if self.on_delivery_failure is not None:
            self.on_delivery_failure(batch_key[0])
        if not done.done():
            done.set_result(None)
