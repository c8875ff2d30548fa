"""`app.producer()`: send records from outside a worker over one connection.

A web handler or a script that calls `app.send` outside a worker would otherwise
connect, create the topic if missing, send, wait and disconnect on every call
(7.5 ms a call on Tansu, and a socket left in TIME_WAIT each time). An
`AppProducer` keeps one producer (and its connection) open for as many sends as
its block makes, checks each topic once, and acknowledges each send before it
returns; `app.send` inside the block goes through it too.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .runtime.record_writer import RecordWriter
from .runtime.topic_admin import ensure_topics
from .topic import Topic
from .transport import transport_for
from .transport.base import Admin, Headers, Producer
from .transport.memory import MemoryBroker

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("streamkit.app")

Records = Iterable[tuple[Any, Any] | tuple[Any, Any, int | None]]

# memory:// brokers this process sent to outside a worker, and those a worker ran on.
_sent_outside_a_worker: set[str] = set()
_worked_on: set[str] = set()


def worked_on(broker: str) -> None:
    """A worker of this process runs on `broker`: what was sent there has a reader."""
    _worked_on.add(broker)


@atexit.register
def warn_of_unseen_sends() -> None:
    """At exit, say so if records went to a memory:// broker that no worker of this
    process ran on and nothing read (nor reset): they reached nobody, and never a
    `streamkit worker` elsewhere."""
    for broker in sorted(_sent_outside_a_worker - _worked_on):
        memory = MemoryBroker.existing(broker)
        if memory is None or memory.was_read:
            continue  # read by a test or a consumer of this process, or reset on purpose
        log.warning(
            "records sent to %s reached no worker: memory:// is a broker inside this "
            "process, so only a worker run by this same process sees them, never a "
            "`streamkit worker` elsewhere. To feed another process, use a broker both "
            "reach (`streamkit dev-broker` prints a kafka:// address; `streamkit send` "
            "sends JSON lines to it). A broker= given in sk.App(...) overrides "
            "STREAMKIT_BROKER.",
            broker,
        )
    _sent_outside_a_worker.clear()


def triples(records: Records) -> list[tuple[Any, Any, int | None]]:
    """`(key, value)` and `(key, value, timestamp_ms)` records as the latter."""
    return [(r[0], r[1], r[2] if len(r) > 2 else None) for r in records]


class AppProducer:
    """`async with app.producer() as producer: await producer.send(topic, key=..., value=...)`.

    Every send is acknowledged by the broker when it returns; sends from many
    coroutines at once share the connection and its batches.
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._producer: Producer | None = None
        self._admin: Admin | None = None
        self._writer: RecordWriter | None = None
        self._checked: set[str] = set()
        self._checking = asyncio.Lock()
        # The flush that will acknowledge the records written since the last one
        # began; sends made meanwhile share it (one flush per round, not per send).
        self._round: asyncio.Future[None] | None = None
        self._flushing = asyncio.Lock()
        self._flushers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> AppProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect; `async with` does this (and `stop`) for you."""
        app = self._app
        settings = app.settings
        if settings.broker.startswith("memory://"):
            _sent_outside_a_worker.add(settings.broker)
        transport = transport_for(settings.broker, settings.transport_options())
        producer = transport.producer()
        producer.on_delivery_failure = app.metrics.producer_failed
        await producer.start()
        self._producer, self._admin = producer, transport.admin()
        self._writer = RecordWriter(producer)
        self._loop = asyncio.get_running_loop()
        if app._producer is None:
            app._producer = self  # `app.send` goes through the first one open

    async def stop(self) -> None:
        """Wait for what was sent, then disconnect."""
        if self._flushers:
            await asyncio.wait(set(self._flushers))
        producer, admin = self._producer, self._admin
        self._producer = self._admin = self._writer = None
        if self._app._producer is self:
            self._app._producer = None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if admin is not None:
                await admin.close()

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Open, and usable from `loop` (its connection belongs to the loop it began on)."""
        return self._writer is not None and self._loop is loop

    async def send(
        self,
        topic: Topic | str,
        *,
        key: Any = None,
        value: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce one record; return once the broker has acknowledged it."""
        await self.send_records(topic, [(key, value, timestamp_ms)], headers or (), partition)

    async def send_many(self, topic: Topic | str, records: Records) -> None:
        """Produce `(key, value)` or `(key, value, timestamp_ms)` records in order; return
        once all are acknowledged."""
        await self.send_records(topic, triples(records))

    async def send_records(
        self,
        topic: Topic | str,
        records: Sequence[tuple[Any, Any, int | None]],
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        """`(key, value, timestamp_ms)` records to one topic, acknowledged on return."""
        writer, admin = self._writer, self._admin
        if writer is None or admin is None:
            raise ConfigError("the producer is not open: use `async with app.producer() as p`")
        declared = self._app.declared_topic(topic)
        if declared.name not in self._checked:
            async with self._checking:  # concurrent first sends create it once
                if declared.name not in self._checked:
                    await ensure_topics(admin, [declared])
                    self._checked.add(declared.name)
        for key, value, ts in records:
            writer.write(declared, key, value, headers, ts, partition)
        await self._acknowledged(writer)

    async def _acknowledged(self, writer: RecordWriter) -> None:
        """Until the records written so far are acknowledged.

        1. Join the round of records waiting for a flush, or open one (a task that
           will flush them).
        2. The round's task waits for the flush in progress, if any: records written
           meanwhile join this round.
        3. It closes the round (later records open the next one) and flushes.
        A caller that is cancelled leaves the round to finish for the others.
        """
        # 1. Join or open the round.
        round_ = self._round
        if round_ is None:
            round_ = self._round = asyncio.get_running_loop().create_future()
            flusher = asyncio.create_task(self._flush_round(writer, round_))
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await asyncio.shield(round_)

    async def _flush_round(self, writer: RecordWriter, round_: asyncio.Future[None]) -> None:
        # 2. One flush at a time.
        async with self._flushing:
            # 3. Close the round, flush it.
            self._round = None
            try:
                await writer.flush()
            except Exception as exc:
                round_.set_exception(exc)
            else:
                round_.set_result(None)
