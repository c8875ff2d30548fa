"""The stream an agent iterates: its task's records, handed over one batch at a time.

The task offers a whole batch and is told when the agent asks for the record after
the last one: that is when every output of the batch has been handed to the sinks,
so the batch's offsets may be committed. Between hand-offs the agent iterates a
plain list, so a record costs no event-loop round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from .events import Event, StreamTime

_timestamp = attrgetter("timestamp")

_Offer = tuple[Sequence[Event] | None, asyncio.Future[None]]


class Stream:
    """One agent instance's view of its task's source partitions."""

    def __init__(self, clock: StreamTime | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._clock = clock or StreamTime()
        self._batch: Sequence[Event] = ()
        self._pos = 0
        self._incoming: asyncio.Future[_Offer] = self._loop.create_future()
        # Resolved when the agent asks past the batch it holds.
        self._held: asyncio.Future[None] | None = None
        self._closed = False
        self.current_event: Event | None = None
        # Iterated by `batches()`: a yielded list is the batch's outputs.
        self.batched = False
        self._rest_from = 0

    def __aiter__(self) -> _Values:
        return _Values(self)

    def items(self) -> _Items:
        """Iterate `(key, value)` pairs."""
        return _Items(self)

    def events(self) -> _Events:
        """Iterate whole events: key, value, headers, timestamp, topic, partition, offset."""
        return _Events(self)

    def batches(self) -> _Batches:
        """Iterate the task's batches whole: each a list of events, as fetched, in the
        order the agent would get them one by one.

        One hand-off per batch instead of per record. An agent with sinks yields a
        list per batch: events (written with their own key, value, headers and
        timestamp) or `(key, value)` pairs (written with the batch's last
        timestamp). A batch is done, and its offsets may be committed, once the
        agent asks for the next.
        """
        self.batched = True
        return _Batches(self)

    # The task's side --------------------------------------------------------

    def offer(self, batch: Sequence[Event] | None) -> asyncio.Future[None]:
        """Hand over a batch (None ends the stream); the future resolves once it is consumed."""
        consumed: asyncio.Future[None] = self._loop.create_future()
        self._incoming.set_result((batch, consumed))
        return consumed

    def position(self, batch: Sequence[Event]) -> int | None:
        """Index in `batch` of the event the agent holds, or None if it holds none of it."""
        if self._batch is batch and self._pos > 0:
            return self._pos - 1
        return None

    def batch_start(self, batch: Sequence[Event]) -> int:
        """`batches()`: index in `batch` of the first event of the batch the agent
        holds (0 when it holds none of it yet)."""
        return self._rest_from if self._batch is batch else 0

    # The agent's side -------------------------------------------------------

    async def _refill(self) -> None:
        if self._closed:
            raise StopAsyncIteration
        if self._held is not None and not self._held.done():
            self._held.set_result(None)
        batch, self._held = await self._incoming
        self._incoming = self._loop.create_future()
        if batch is None:
            self._held.set_result(None)
            self._closed = True
            raise StopAsyncIteration
        self._batch = batch
        self._pos = 0

    def _take(self) -> Event | None:
        """The next event of the batch in hand, or None when it is used up.

        Synchronous on purpose: the views call it first and await a refill only at
        the end of a batch, so a record costs no extra coroutine.
        """
        pos = self._pos
        batch = self._batch
        if pos >= len(batch):
            return None
        event = batch[pos]
        self._pos = pos + 1
        self.current_event = event
        clock = self._clock
        if clock.ms is None or event.timestamp > clock.ms:
            clock.ms = event.timestamp
        return event

    def _take_rest(self) -> list[Event]:
        """The rest of the batch in hand (a copy: the task's other agents get the same
        events), stream time moved to its largest timestamp."""
        self._rest_from = self._pos
        events = list(self._batch[self._pos :])
        self._pos = len(self._batch)
        if events:
            self.current_event = events[-1]
            clock = self._clock
            latest = max(map(_timestamp, events))
            if clock.ms is None or latest > clock.ms:
                clock.ms = latest
        return events

    async def _next_event(self) -> Event:
        event = self._take()
        while event is None:
            await self._refill()
            event = self._take()
        return event


class _View:
    __slots__ = ("_stream",)

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def __aiter__(self) -> _View:
        return self


class _Values(_View):
    __slots__ = ()

    async def __anext__(self) -> Any:
        event = self._stream._take() or await self._stream._next_event()
        return event.value


class _Items(_View):
    __slots__ = ()

    async def __anext__(self) -> tuple[Any, Any]:
        event = self._stream._take() or await self._stream._next_event()
        return event.key, event.value


class _Events(_View):
    __slots__ = ()

    async def __anext__(self) -> Event:
        return self._stream._take() or await self._stream._next_event()


class _Batches(_View):
    __slots__ = ()

    async def __anext__(self) -> list[Event]:
        stream = self._stream
        while stream._pos >= len(stream._batch):
            await stream._refill()
        return stream._take_rest()
