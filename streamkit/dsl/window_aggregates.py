"""The processors of windowed aggregations: one per kind of window, over what they
share (lateness, emit-final's buffer and its clock). Their semantics are described
where the aggregations are declared, in windowed.py."""

from __future__ import annotations

import abc
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..processor import WALL_CLOCK, ProcessorContext, Record
from ..state.table import Table, current_stores
from ..state.window_stores import (
    PendingWindows,
    ValueAndTimestamp,
    Windowed,
)
from ..topic import Topic
from ..transport.base import Headers
from . import operators as ops
from .aggregate import Aggregator, Change, Initializer
from .ktable import values_downstream
from .windows import (
    SessionWindows,
    SlidingWindows,
    TimeWindows,
)

if TYPE_CHECKING:
    pass


log = logging.getLogger("streamkit.processor")

# How often a node that drops late records says so in the log, in wall-clock seconds.
LATE_SUMMARY_S = 60.0
Merger = Callable[[Any, Any, Any], Any]  # (key, aggregate, aggregate) -> aggregate
# tuple.__new__(Windowed, (key, start, end)) builds a NamedTuple without the Python
# frame of its generated constructor: a window key per record on the hot path.
_new_tuple = tuple.__new__


@dataclass(frozen=True)
class WindowOptions:
    """How results leave the aggregation, and how long its store keeps windows,
    checked when it is declared."""

    final: bool
    late_topic: Topic | None
    close_idle_ms: int | None
    # Kafka's Materialized.withRetention: None for the windows' own (size + grace).
    retention_ms: int | None = None

    def store_retention_ms(self, windows: TimeWindows | SlidingWindows | SessionWindows) -> int:
        """The store's retention: at least what the windows need, as Kafka refuses less
        than size (a sliding window's two time differences, a session's gap) plus grace."""
        if self.retention_ms is None:
            return windows.retention_ms
        if isinstance(windows, SessionWindows):
            least = windows.gap_ms + windows.grace_ms
        else:
            least = windows.retention_ms
        if self.retention_ms < least:
            raise ConfigError(
                f"retention ({self.retention_ms} ms) must be at least the windows' size plus "
                f"their grace ({least} ms) for {windows!r}"
            )
        # A session store keeps closed sessions a gap longer, to refuse late merges.
        return max(self.retention_ms, windows.retention_ms)


@dataclass(frozen=True)
class WindowSetup:
    store: Any  # TimeWindowStore | SessionStore
    pending: PendingWindows | None
    initializer: Initializer
    aggregator: Aggregator
    closes_at: Callable[[int], int]  # window end -> the stream time at which it is closed
    options: WindowOptions
    grace_ms: int = 0  # the windows' grace, for the log

    @property
    def stores(self) -> tuple[Table, ...]:
        return (self.store,) if self.pending is None else (self.store, self.pending)


class WindowAggregate(ops.DslProcessor):
    """What every windowed aggregation shares: lateness, and emit-final's buffer and clock.

    Emit-final keeps the windows not emitted yet in `PendingWindows` (restored with
    the task) and, in memory, a heap of them by closing time, rebuilt from that
    store when the task opens, so that closing windows costs no scan per record.
    """

    def __init__(self, setup: WindowSetup) -> None:
        self.setup = setup
        self.store = setup.store
        self.pending = setup.pending
        self.initializer = setup.initializer
        self.aggregator = setup.aggregator
        self._idle_ms = setup.options.close_idle_ms
        self._heap: list[tuple[int, int, Windowed]] | None = None
        self._seq = itertools.count()
        # The task's stream time when this node last saw it move, and the wall clock then.
        self._seen: int | None = None
        self._moved_at = 0
        # Stream time as moved on by the wall clock while the input stood still.
        self._idle_time: int | None = None
        # The latest record time among the pending windows: stream time after a restart.
        self._restored: int | None = None
        # Records seen and records too late for every window (or some), since `_since`:
        # what the periodic summary of late records reports.
        self._seen_records = self._late_records = self._partly_late = 0
        self._since = time.time()
        # Only emit-final closes windows on idle input: only it watches the wall clock
        # move with stream time (a clock read per record otherwise spent for nothing).
        self._idle_closing = self.pending is not None and self._idle_ms is not None

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self._moved_at = context.wall_clock_ms
        self._clock = self.node.clock
        # The task's shard of the window store, reached once rather than through the
        # table's lookup of the running task's stores at every read and write.
        shard = current_stores.get()[self.store.name]
        self._get, self._put, self._delete = shard.get, shard.set, shard.delete
        # Updates go out as windows' new values when the table is only streamed on: as
        # a record's parts when what takes them can (a map, a sink).
        self._emit_value = None if self.pending is not None else values_downstream(self)
        self._emit_value_parts = (
            None if self._emit_value is None else ops.parts_taker(self._emit_value)
        )
        if self._idle_closing:
            context.schedule(self._idle_ms / 1000, WALL_CLOCK, self._close_idle)
        context.schedule(LATE_SUMMARY_S, WALL_CLOCK, self._summarise_late)

    def close(self) -> None:
        self._summarise_late(self.context.wall_clock_ms)

    def process(self, record: Record) -> None:
        self._seen_records += 1
        if record.key is None or record.value is None:
            self.node.dropped(record, "null key" if record.key is None else "null value")
            return
        if record.timestamp < 0:
            self.node.dropped(record, "negative timestamp")
            return
        if self._idle_closing:
            now = self._stream_time(record)
        else:  # `_stream_time` without emit-final's idle closing, inline
            now = self._clock.ms
            if now is None:
                now = record.timestamp
        self.aggregate(record, now)
        if self.pending is not None:
            self._emit_closed(now, record.headers)

    @abc.abstractmethod
    def aggregate(self, record: Record, now: int) -> None:
        """Fold the record into its windows, given the stream time."""

    # For the aggregations ----------------------------------------------------------------

    def closed(self, window: Windowed, now: int) -> bool:
        return now >= self.setup.closes_at(window.end_ms)

    def emitted(self, window: Windowed) -> bool:
        """With emit-final, whether a window that has a row was emitted already: it has no
        pending result. This holds across a restart, which forgets stream time."""
        return self.pending is not None and window not in self.pending

    def accepts(self, window: Windowed, now: int, stored: bool) -> bool:
        """Whether a window (`stored`: it has a row) may still change."""
        return not self.closed(window, now) and not (stored and self.emitted(window))

    def result(self, record: Record, window: Windowed, new: Any, old: Any, ts: int) -> None:
        """A window's new aggregate; None: the window was deleted, which emit-final
        forgets (nothing to emit when it closes) and emit-update passes on."""
        if self.pending is not None:
            if new is None:
                self.pending.delete(window)
            else:
                self._hold(window, new, ts)
        else:
            self.emit(Record(window, _new_tuple(Change, (new, old)), ts, record.headers))

    def retract(self, record: Record, window: Windowed, old: Any) -> None:
        """A window merged away: emitted results are taken back, pending ones dropped."""
        if self.pending is not None:
            self.pending.delete(window)
        else:
            self.emit(Record(window, Change(None, old), window.end_ms, record.headers))

    def late(self, record: Record) -> None:
        """Never silent: counted, and dropped or written unchanged to the late topic."""
        self._late_records += 1
        topic = self.setup.options.late_topic
        if topic is not None:
            self.node.send(topic, record)
        self.node.dropped(record, "late", topic)

    def partly_late(self, record: Record) -> None:
        """Too late for some of its windows (hopping, sliding): the others took it."""
        self._partly_late += 1
        self.node.dropped(record, "late for some windows")

    def _summarise_late(self, wall_ms: int) -> None:
        """One log line per interval while records come late, rather than one per drop:
        how many of how many since when, and what would have taken them."""
        if self._late_records or self._partly_late:
            topic = self.setup.options.late_topic
            log.warning(
                "task %s: node %s: %d of %d records since %s were later than their window's "
                "grace (%d ms) and %s; %d more were too late for some of their windows. "
                "A larger grace takes them (metric streamkit_dropped_records)",
                self.context.task_id,
                self.node.node.name,
                self._late_records,
                self._seen_records,
                time.strftime("%H:%M:%S", time.localtime(self._since)),
                self.setup.grace_ms,
                "were dropped" if topic is None else f"went to {topic.name}",
                self._partly_late,
            )
        self._seen_records = self._late_records = self._partly_late = 0
        self._since = time.time()

    # Stream time, and emit-final --------------------------------------------------------

    def _stream_time(self, record: Record) -> int:
        now = self._clock.ms
        if now is None:
            now = record.timestamp
        if not self._idle_closing:
            return now
        if self._seen is None or now > self._seen:
            self._seen, self._moved_at = now, self.context.wall_clock_ms
        return now if self._idle_time is None else max(now, self._idle_time)

    def _close_idle(self, wall_ms: int) -> None:
        """If stream time stood still for the interval, move it on by the wall-clock time
        since it last moved, and emit the windows that closes."""
        now = self.context.stream_time_ms
        if now is not None and (self._seen is None or now > self._seen):
            self._seen, self._moved_at = now, wall_ms  # moved by records this node did not see
            return
        # Only time the input was watched to be quiet counts: input that is late in
        # coming (a frozen worker, a broker that stood still, a rebalance) would find
        # its windows closed and its records late.
        idle = min(wall_ms - self._moved_at, self.node.input_quiet_ms())
        if idle < self._idle_ms:
            return
        self._index()
        base = self._seen if self._seen is not None else self._restored
        if base is None:
            return  # nothing seen and nothing pending
        moved = base + idle
        self._idle_time = moved if self._idle_time is None else max(self._idle_time, moved)
        self._emit_closed(self._idle_time if now is None else max(now, self._idle_time), ())

    def _index(self) -> list[tuple[int, int, Windowed]]:
        if self._heap is None:
            assert self.pending is not None
            closes_at = self.setup.closes_at
            heap, latest = [], None
            for window, held in self.pending.items():
                heap.append((closes_at(window.end_ms), next(self._seq), window))
                latest = held.timestamp if latest is None else max(latest, held.timestamp)
            heapq.heapify(heap)
            self._heap, self._restored = heap, latest
        return self._heap

    def _hold(self, window: Windowed, value: Any, ts: int) -> None:
        assert self.pending is not None
        heap = self._index()
        held = self.pending.get(window)
        if held is None:
            heapq.heappush(heap, (self.setup.closes_at(window.end_ms), next(self._seq), window))
        else:
            ts = max(ts, held.timestamp)
        self.pending.set(window, ValueAndTimestamp(value, ts))

    def _emit_closed(self, now: int, headers: Headers) -> None:
        """Emit the pending windows closed at `now`, in closing order, with the headers
        of the record that closed them (Kafka's emit-final forwards the record in
        hand's; none when idle time closed them)."""
        assert self.pending is not None
        heap = self._index()
        while heap and heap[0][0] <= now:
            window = heapq.heappop(heap)[2]
            held = self.pending.get(window)
            if held is None:
                continue  # merged into another session since
            self.pending.delete(window)
            self.emit(Record(window, Change(held.value, None), held.timestamp, headers))


class TimeWindowAggregate(WindowAggregate):
    """Tumbling and hopping windows: the record updates each window it falls in."""

    def __init__(self, setup: WindowSetup, windows: TimeWindows) -> None:
        super().__init__(setup)
        self.windows = windows
        self._size, self._grace = windows.size_ms, windows.grace_ms
        self._tumbling = windows.advance_ms == windows.size_ms
        self._bounds = (-1, -1)

    def aggregate(self, record: Record, now: int) -> None:
        key, value, ts = record.key, record.value, record.timestamp
        size = self._size
        get, put = self._get, self._put
        added = skipped = 0
        if self._tumbling:
            # The one window holding ts (non-negative: see `process`). Its bounds are
            # the same int objects for every record of the window: the changed windows
            # held until the commit then cost a third less memory.
            start = ts - ts % size
            bounds = self._bounds
            if bounds[0] != start:
                bounds = self._bounds = (start, start + size)
            spans: Iterable[tuple[int, int]] = (bounds,)
        else:
            spans = [(start, start + size) for start in self.windows.starts_for(ts)]
        for start, end in spans:
            # The store is given a plain tuple, equal to the Windowed key and of the same
            # hash: the collector stops tracking a tuple of atomic values once it has
            # seen it, never an instance of a tuple's subclass, and the windows changed
            # since the commit, tens of thousands, made every collection longer.
            row_key = (key, start, end)
            if now >= end + self._grace:
                skipped += 1  # closed: see `accepts`
                continue
            held = get(row_key, None)
            if held is not None and self.emitted(row_key):
                skipped += 1  # emitted already (emit-final)
                continue
            if held is None:
                old, out_ts = None, ts
                new = self.aggregator(key, value, self.initializer())
            else:
                old = held[0]
                new = self.aggregator(key, value, old)
                out_ts = held[1] if held[1] > ts else ts
            # Windowed(...) without the NamedTuple constructor's Python frame.
            window = _new_tuple(Windowed, row_key)
            if new is None:
                # None deletes the window, as Kafka's KStreamWindowAggregate stores it
                # (ValueAndTimestamp.make(null)): the key's next record there starts
                # again from the initializer; the deletion goes on downstream.
                self._delete(row_key)
                if self.pending is not None:
                    self.pending.delete(window)  # nothing to emit when it closes
                    added += 1
                    continue
            else:
                put(row_key, (new, out_ts))  # a ValueAndTimestamp row, built cheaply
            if self._emit_value_parts is not None:
                self._emit_value_parts(window, new, record.headers, out_ts)
            elif self._emit_value is not None:
                self._emit_value(Record(window, new, out_ts, record.headers))
            elif self.pending is None:
                self.emit(Record(window, _new_tuple(Change, (new, old)), out_ts, record.headers))
            else:
                self._hold(window, new, out_ts)
            added += 1
        if not added:
            self.late(record)
        elif skipped:
            self.partly_late(record)


class SlidingWindowAggregate(WindowAggregate):
    """Kafka Streams' sliding windows: a window per distinct set of records within the
    time difference of each other, found from the windows around the record alone.

    Each record has a left window [t - d, t] and, when later records fall within d
    of it, a right window [t + 1, t + 1 + d]; every window keeps its aggregate with
    its latest record time, which is how a record finds its predecessor. Records
    before d (which would start windows before 0) share the window [0, d].
    """

    def __init__(self, setup: WindowSetup, windows: SlidingWindows) -> None:
        super().__init__(setup)
        self.d = windows.time_difference_ms
        # The record's windows that were closed, and those that took it.
        self._skipped = self._taken = 0

    def aggregate(self, record: Record, now: int) -> None:
        if now >= self.setup.closes_at(record.timestamp + self.d):
            self.late(record)  # even the latest window holding it has closed
            return
        self._skipped = self._taken = 0
        if record.timestamp < self.d:
            self._early(record, now)
        else:
            self._in_order(record, now)
        if self._skipped:
            # Every window that would take it closed: late, as Kafka counts it.
            (self.partly_late if self._taken else self.late)(record)

    def _in_order(self, record: Record, now: int) -> None:
        key, t, d = record.key, record.timestamp, self.d
        starts: set[int] = set()
        left: ValueAndTimestamp | None = None
        right: ValueAndTimestamp | None = None
        left_exists = right_exists = False
        previous: int | None = None  # the latest record time before t, when one is near
        for start, end, held in list(self.store.fetch(key, max(0, t - 2 * d), t + 1)):
            starts.add(start)
            if end < t:
                left, previous = held, held.timestamp
            elif end == t:
                left_exists = True
                if held.timestamp < t:
                    previous = held.timestamp
                self._add(record, Windowed(key, start, end), held, None, now)
            elif start <= t:
                right = held
                self._add(record, Windowed(key, start, end), held, None, now)
            else:  # start == t + 1: the record's right window exists already
                right_exists = True
        if previous is not None and previous + 1 not in starts and previous + 1 + d >= t:
            # The previous record's right window, which this record is the first of.
            self._add(record, Windowed(key, previous + 1, previous + 1 + d), None, None, now)
        if not left_exists:
            near = left is not None and previous is not None and previous >= t - d
            base = left.value if near and left is not None else self.initializer()
            self._add(record, Windowed(key, t - d, t), None, base, now)
        if not right_exists and right is not None and right.timestamp > t:
            self._open_right(record, right)

    def _early(self, record: Record, now: int) -> None:
        key, t, d = record.key, record.timestamp, self.d
        starts: set[int] = set()
        combined: tuple[Windowed, ValueAndTimestamp] | None = None
        right: ValueAndTimestamp | None = None
        right_exists = False
        previous: int | None = None
        for start, end, held in list(self.store.fetch(key, 0, t + 1)):
            starts.add(start)
            if start == 0:
                combined = (Windowed(key, start, end), held)
                if held.timestamp < t:
                    previous = held.timestamp
            elif start <= t:
                right = held
                self._add(record, Windowed(key, start, end), held, None, now)
            else:
                right_exists = True
        if right is None and combined is not None and combined[1].timestamp > t:
            right = combined[1]  # holds only records after t, or a right window would exist
        if not right_exists and right is not None and right.timestamp > t:
            self._open_right(record, right)
        if previous is not None and previous + 1 not in starts:
            self._add(record, Windowed(key, previous + 1, previous + 1 + d), None, None, now)
        if combined is None:
            self._add(record, Windowed(key, 0, d), None, None, now)
        else:
            self._add(record, combined[0], combined[1], None, now)

    def _add(
        self,
        record: Record,
        window: Windowed,
        held: ValueAndTimestamp | None,
        base: Any,
        now: int,
    ) -> None:
        """Fold the record into a window: its row `held`, or a new one from `base`
        (None: the initializer's)."""
        if not self.accepts(window, now, held is not None):
            self._skipped += 1
            return
        self._taken += 1
        if held is None:
            start = self.initializer() if base is None else base
            old, ts = None, record.timestamp
        else:
            start = old = held.value
            ts = max(record.timestamp, held.timestamp)
        new = self.aggregator(record.key, record.value, start)
        if new is None:
            # Kafka's KStreamSlidingWindowAggregate stores ValueAndTimestamp.make(null):
            # the window is deleted, and later records find no window there.
            self.store.delete(window)
        else:
            self.store.set(window, ValueAndTimestamp(new, ts))
        self.result(record, window, new, old, ts)

    def _open_right(self, record: Record, right: ValueAndTimestamp) -> None:
        """The record's right window: the later records' aggregate, without the record."""
        t = record.timestamp
        window = Windowed(record.key, t + 1, t + 1 + self.d)
        self.store.set(window, right)
        self.result(record, window, right.value, None, right.timestamp)


class SessionWindowAggregate(WindowAggregate):
    """Sessions: a record joins (and may bridge) the key's sessions within a gap of it."""

    def __init__(self, setup: WindowSetup, windows: SessionWindows, merger: Merger) -> None:
        super().__init__(setup)
        self.gap = windows.gap_ms
        self.merger = merger

    def aggregate(self, record: Record, now: int) -> None:
        key, ts = record.key, record.timestamp
        found = self.store.find(key, ts - self.gap, ts + self.gap)
        start = min([ts, *(w.start_ms for w, _ in found)])
        end = max([ts, *(w.end_ms for w, _ in found)])
        merged = Windowed(key, start, end)
        # As in Kafka Streams, only the merged session must be open: a record may merge
        # into a session that emit-final has emitted already (its result is replaced).
        if self.closed(merged, now):
            self.late(record)
            return
        aggregate = self.initializer()
        for _, value in found:
            aggregate = self.merger(key, aggregate, value)
        aggregate = self.aggregator(key, record.value, aggregate)
        if found and merged != (key, ts, ts):
            # Every session the record falls in is taken back, even one whose bounds do
            # not change, and the merged session comes anew, as Kafka Streams emits them.
            for window, value in found:
                self.store.delete(window)
                self.retract(record, window, value)
        if aggregate is None:
            # Kafka's session stores remove a session put with a null aggregate
            # (KStreamSessionWindowAggregate); the deletion goes on downstream.
            self.store.delete(merged)
        else:
            self.store.set(merged, aggregate)
        self.result(record, merged, aggregate, None, end)
