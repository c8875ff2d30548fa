"""One agent instance inside one task: feeds it batches, writes its yields, applies its policy."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..agent import Agent
from ..events import Event, StreamTime
from ..state.table import current_stores, key_in_hand
from ..state.task_store import TaskStore
from ..stream import Stream
from ..topic import Topic
from ..transport.base import RawRecord
from .failures import FailureRouter
from .record_writer import RecordWriter, current_writer

log = logging.getLogger("streamkit.agent")


class AgentReturned(RuntimeError):
    """The agent's function ended while its stream still had records for it."""


class AgentRunner:
    def __init__(
        self,
        agent: Agent,
        task_name: str,
        writer: RecordWriter,
        failures: FailureRouter,
        raw_of: Callable[[Event], RawRecord],
        stores: Mapping[str, TaskStore],
        clock: StreamTime,
        only_topics: Sequence[Topic] | None = None,
    ) -> None:
        self._clock = clock
        # The agent's own sources, when its task also reads other topics (a shared table).
        self._only = None if only_topics is None else frozenset(t.name for t in only_topics)
        self.agent = agent
        self._stores = {t.name: stores[t.name] for t in agent.tables}
        self._task_name = task_name
        self._writer = writer
        self._failures = failures
        self._raw_of = raw_of
        self._stream: Stream | None = None
        self._job: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start a fresh instance of the agent, parked until the first batch."""
        self._stream = stream = Stream(self._clock)
        # Table accesses inside the agent reach this task's shards.
        context = contextvars.copy_context()
        context.run(current_stores.set, self._stores)
        context.run(current_writer.set, self._writer)
        context.run(key_in_hand.set, lambda: self._key_in_hand(stream))
        self._job = asyncio.create_task(
            self._drive(self._stream),
            name=f"agent {self.agent.name} in task {self._task_name}",
            context=context,
        )

    def _key_in_hand(self, stream: Stream) -> bytes | None:
        event = stream.current_event
        return None if event is None else self._raw_of(event).key

    async def _drive(self, stream: Stream) -> None:
        agent = self.agent
        if not agent.yields:
            await agent.fn(stream)
            return
        write = self._writer.write
        sinks = agent.sinks
        async for out in agent.fn(stream):
            event = stream.current_event
            if out.__class__ is list and stream.batched:
                self._write_batch(out, event)
                continue
            if type(out) is tuple and len(out) == 2:
                key, value = out
            else:
                # `yield value` keeps the input key, as Kafka Streams' mapValues does.
                key, value = (event.key if event is not None else None), out
            if event is None:
                headers, timestamp = (), None
            else:
                headers, timestamp = event.headers, event.timestamp
            for sink in sinks:
                write(sink, key, value, headers, timestamp)

    def _write_batch(self, outputs: list[Any], last: Event | None) -> None:
        """A `batches()` agent's outputs for one batch (`RecordWriter.write_batch`)."""
        timestamp = None if last is None else last.timestamp
        for sink in self.agent.sinks:
            self._writer.write_batch(sink, outputs, timestamp)

    async def process(self, batch: Sequence[Event]) -> None:
        """Return once the agent has asked past the batch's last event."""
        if self._only is not None:
            only = self._only
            batch = [e for e in batch if e.topic in only]
        remaining = batch
        while remaining:
            assert self._stream is not None and self._job is not None
            consumed = self._stream.offer(remaining)
            await asyncio.wait((consumed, self._job), return_when=asyncio.FIRST_COMPLETED)
            if consumed.done():
                return
            exc = self._job.exception() or AgentReturned(
                "the agent function returned while its stream was still open"
            )
            if self._stream.batched:
                # Raises AgentError under the `fail` policy; otherwise the records are
                # dealt with. The batch in hand is the rest of `remaining`.
                start = self._stream.batch_start(remaining)
                self._failures.agent_failed_batch(
                    self.agent.name,
                    [self._raw_of(e) for e in remaining[start:]],
                    exc,
                    self.agent.on_error,
                )
                log.debug("agent %s raised", self.agent.name, exc_info=exc)
                self.start()
                return
            index = self._stream.position(remaining) or 0
            failed = remaining[index]
            # Raises AgentError under the `fail` policy; otherwise the record is dealt with.
            self._failures.agent_failed(
                self.agent.name, self._raw_of(failed), exc, self.agent.on_error
            )
            log.debug("agent %s raised", self.agent.name, exc_info=exc)
            self.start()
            remaining = remaining[index + 1 :]

    async def close(self) -> None:
        """End the stream so the agent's loop finishes, then wait for it."""
        if self._job is None or self._stream is None or self._job.done():
            return
        self._stream.offer(None)
        try:
            await self._job
        except Exception:
            log.exception("agent %s raised while its stream was closing", self.agent.name)

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
