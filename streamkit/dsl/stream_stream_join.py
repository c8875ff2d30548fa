"""Stream-stream joins in event-time windows (Kafka's KStreamKStreamJoin): each side
buffers its records for the window and grace, and left and outer joins emit the
records that found no partner once their window has closed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sortedcontainers import SortedList

from ..processor import Record
from ..state.join_store import (
    LEFT,
    RIGHT,
    JoinBuffer,
    PendingJoins,
    ValuesSerde,
)
from ..transport.base import Headers
from . import operators as ops
from .join_parts import (
    DAY_MS,
    PYTHON,
    Joiner,
    JoinHow,
    changelog_topic,
    copartition,
)
from .kstream import KStream, internal_serde
from .windows import JoinWindows, notice_unchosen_grace

if TYPE_CHECKING:
    from ..app import App


class _Sided(NamedTuple):
    side: int
    value: Any


class _TagSide(ops.DslProcessor):
    """Marks which input a record came from: both sides feed one join processor."""

    def __init__(self, side: int) -> None:
        self.side = side

    def process(self, record: Record) -> None:
        self.emit(record.with_value(_Sided(self.side, record.value)))


# Kafka's outer-join store orders its rows by timestamp, then side (right before
# left: the side is a byte, 1 for left), then key bytes; unmatched records that
# close together leave in that order.
_SIDE_RANK = (1, 0)  # LEFT, RIGHT


class _StreamStreamJoin(ops.DslProcessor):
    """Both sides of a windowed join in one processor, as Kafka Streams' pair of join
    processors sharing one time tracker and one outer-join store.

    - Stream time is the join's: the largest timestamp it has seen on either side.
    - A record joins the other side's buffered records within its window, however
      late it is: the buffers keep records for before + after + grace of their side's
      time, and a record is only refused a place in its own buffer when expired.
    - A left/outer record that finds no partner is emitted at once, joined with
      None, when its window has already ended (t + after < stream time); otherwise
      it waits in the pending store until a partner comes or its window and grace
      have passed, and is then emitted in the store's order (timestamp, right
      before left, key bytes).
    - A record with a null key is emitted at once by a side that emits unmatched
      records (KIP-962), and dropped (counted) by the others.

    Pending records are indexed in memory, sorted as Kafka's store iterates them,
    and rebuilt from the pending store when a task opens.
    """

    def __init__(
        self,
        joiner: Joiner,
        windows: JoinWindows,
        buffers: tuple[JoinBuffer, JoinBuffer],
        pending: PendingJoins | None,
        emits_unmatched: tuple[bool, bool],
    ) -> None:
        self.joiner = joiner
        self.grace = windows.grace_ms
        # A record of side s joins the other side's records in [t - back[s], t + ahead[s]];
        # an unmatched record of side s waits ahead[s] + grace past its timestamp.
        self.back = (windows.before_ms, windows.after_ms)
        self.ahead = (windows.after_ms, windows.before_ms)
        self.retention = windows.before_ms + windows.after_ms + windows.grace_ms
        self.buffers = buffers
        self.pending = pending
        self.emits_unmatched = emits_unmatched
        self._index: SortedList | None = None  # (ts, side rank, key bytes, key, side)
        self._key_bytes = None if pending is None else pending.key_bytes
        self._now: int | None = None
        # The largest timestamp put in each side's buffer: its own clock for expiry.
        self._buffer_time: list[int | None] = [None, None]
        # Kafka's lower bound on pending timestamps: no emission is tried before
        # stream time passes it by a window and the grace.
        self._min_time: int | None = None

    def process(self, record: Record) -> None:
        side, value = record.value
        key, ts = record.key, record.timestamp
        now = ts if self._now is None or ts > self._now else self._now
        self._now = now
        emits = self.emits_unmatched[side]
        if key is None and value is not None and emits:
            self.emit(Record(None, self._joined(side, value, None), ts, record.headers))
            return
        if key is None or value is None:
            self.node.dropped(record, "null key" if key is None else "null value")
            return
        if self.pending is not None and ts == now:
            self._emit_closed(side, now, record.headers)
        self._buffer(side, key, ts, value)
        other = RIGHT - side
        lo, hi = max(0, ts - self.back[side]), max(0, ts + self.ahead[side])
        other_time = self._buffer_time[other]
        if other_time is not None:
            lo = max(lo, other_time - self.retention + 1)
        matched = False
        for other_ts, values in self.buffers[other].between(key, lo, hi):
            matched = True
            if self.pending is not None:
                self._matched(key, other_ts, other)
            out_ts = ts if ts > other_ts else other_ts
            for other_value in values:
                self.emit(
                    Record(key, self._joined(side, value, other_value), out_ts, record.headers)
                )
        if matched or not emits:
            return
        if self.pending is None or hi < now:
            self.emit(Record(key, self._joined(side, value, None), ts, record.headers))
        else:
            self._hold(key, ts, side, value)

    def _joined(self, side: int, value: Any, other: Any) -> Any:
        return self.joiner(value, other) if side == LEFT else self.joiner(other, value)

    def _buffer(self, side: int, key: Any, ts: int, value: Any) -> None:
        """Keep the record for the other side, unless it has expired already."""
        latest = self._buffer_time[side]
        if latest is None or ts > latest:
            self._buffer_time[side] = latest = ts
        if ts > latest - self.retention:
            self.buffers[side].add(key, ts, value)
        # The shards expire by the task's stream time: say how far each side is behind.
        task_now = self.context.stream_time_ms
        if task_now is not None:
            partition = self.context.partition
            for s in (LEFT, RIGHT):
                side_time = self._buffer_time[s]
                if side_time is not None:
                    self.buffers[s].lag_behind(partition, task_now - side_time)

    def _matched(self, key: Any, ts: int, side: int) -> None:
        """A held record found its partner: it leaves the pending store and its index."""
        assert self.pending is not None and self._key_bytes is not None
        row = (key, ts, side)
        if row in self.pending:
            self.pending.delete(row)
            self._pending_index().discard((ts, _SIDE_RANK[side], self._key_bytes(key), key, side))

    def _hold(self, key: Any, ts: int, side: int, value: Any) -> None:
        assert self.pending is not None and self._key_bytes is not None
        row = (key, ts, side)
        values = self.pending.get(row)
        self.pending[row] = [value] if values is None else [*values, value]
        if values is None:
            self._pending_index().add((ts, _SIDE_RANK[side], self._key_bytes(key), key, side))
        if self._min_time is None or ts < self._min_time:
            self._min_time = ts

    def _pending_index(self) -> SortedList:
        if self._index is None:
            assert self.pending is not None and self._key_bytes is not None
            key_bytes = self._key_bytes
            self._index = SortedList(
                (ts, _SIDE_RANK[side], key_bytes(key), key, side)
                for (key, ts, side), _values in self.pending.items()
            )
            if self._index:
                self._min_time = self._index[0][0]
        return self._index

    def _emit_closed(self, side: int, now: int, headers: Headers) -> None:
        """Unmatched records whose window and grace have passed, in the pending store's
        order, joined with None, at their own timestamps, with the headers of the
        record that moved stream time on (as Kafka Streams forwards them).

        As Kafka Streams does: nothing is tried until stream time passes the lower
        bound by this side's window; the scan stops once it has met a still-open
        record of each side, and the bound becomes the last record it read.
        """
        assert self.pending is not None
        index = self._pending_index()
        if self._min_time is None or self._min_time + self.ahead[side] + self.grace >= now:
            return
        last_read: int | None = None
        still_open = [False, False]
        emitted = []
        for entry in index:
            if still_open[LEFT] and still_open[RIGHT]:
                break  # every later record is open on both sides
            ts, _, _, key, entry_side = entry
            last_read = ts
            if ts + self.ahead[entry_side] + self.grace >= now:
                still_open[entry_side] = True
                continue
            emitted.append(entry)
            row = (key, ts, entry_side)
            for value in self.pending.get(row) or ():
                self.emit(Record(key, self._joined(entry_side, value, None), ts, headers))
            self.pending.delete(row)
        for entry in emitted:
            index.remove(entry)
        self._min_time = last_read


def stream_stream(
    left: KStream,
    right: KStream,
    joiner: Joiner,
    how: JoinHow,
    windows: JoinWindows,
    name: str | None,
) -> KStream:
    app, graph = left.app, left.app.graph
    left = left.keyed_for_grouping(f"{name}-left" if name else None)
    right = right.keyed_for_grouping(f"{name}-right" if name else None)
    this = graph.add(
        "KSTREAM-JOINTHIS",
        lambda: _TagSide(LEFT),
        (left.node,),
        name=f"{name}-this" if name else None,
    )
    that = graph.add(
        "KSTREAM-JOINOTHER",
        lambda: _TagSide(RIGHT),
        (right.node,),
        name=f"{name}-other" if name else None,
    )
    prefix = {"inner": "KSTREAM-JOIN", "left": "KSTREAM-LEFTJOIN", "outer": "KSTREAM-OUTERJOIN"}
    join_name = graph.name(prefix[how], name)
    notice_unchosen_grace(windows, f"join {join_name!r}")
    # Kafka keeps both sides for the window's size plus the grace.
    retention = windows.before_ms + windows.after_ms + windows.grace_ms
    buffers = (
        _buffer(app, f"{this.name}-store", left, retention),
        _buffer(app, f"{that.name}-store", right, retention),
    )
    emits_unmatched = (how in ("left", "outer"), how == "outer")
    pending = None
    if how != "inner":
        store = f"{join_name}-outer-shared-store"
        key_serde = internal_serde(None, left.key_serde)
        value_serde = ValuesSerde(PYTHON)
        pending = PendingJoins(
            store,
            changelog_topic(app, store, key_serde, value_serde, **{"cleanup.policy": "compact"}),
        )
        app.add_store(pending)
    stores = (*buffers, *([pending] if pending is not None else []))
    node = graph.add(
        prefix[how],
        lambda: _StreamStreamJoin(joiner, windows, buffers, pending, emits_unmatched),
        (this, that),
        name=join_name,
        stores=stores,
    )
    copartition(app, f"join {join_name}", left.node, right.node)
    return KStream(app, node, left.key_serde, None)


def _buffer(app: App, store: str, side: KStream, retention_ms: int) -> JoinBuffer:
    """A side's buffer keeps a record while records of the other side may still join it."""
    retention = max(0, retention_ms)
    changelog = changelog_topic(
        app,
        store,
        internal_serde(None, side.key_serde),
        ValuesSerde(internal_serde(None, side.value_serde)),
        **{"cleanup.policy": "compact,delete", "retention.ms": str(retention + DAY_MS)},
    )
    buffer = JoinBuffer(store, changelog, retention)
    app.add_store(buffer)
    return buffer
