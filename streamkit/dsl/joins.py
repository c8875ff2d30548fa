"""Joins: stream-stream (windowed), stream-table, table-table and foreign-key table-table,
with Kafka Streams' semantics; stream-GlobalKTable joins are dispatched to global_table.py.

Every join but the global one needs both inputs in one task: it registers a
co-partition group, which the Topology checks at start-up (DESIGN.md invariant
5), and a stream whose key may have changed is repartitioned first. A
foreign-key join cannot be co-partitioned (the right table is keyed by the
foreign key), so it crosses between the two tables' tasks through two internal
topics, as KIP-213 does: subscriptions keyed by the foreign key, responses keyed
by the left key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sortedcontainers import SortedList

from ..errors import ConfigError
from ..processor import ProcessorContext, Record
from ..serde import PythonSerde, Serde, serde_for
from ..state.join_store import (
    LEFT,
    RIGHT,
    JoinBuffer,
    PendingJoins,
    SubscriptionStore,
    ValuesSerde,
)
from ..state.table import Table
from ..state.timestamped import ValueAndTimestamp
from ..topic import Topic
from ..transport.base import Headers
from . import operators as ops
from .aggregate import Change
from .graph import CopartitionGroup, NodeKind, NodeSpec
from .kstream import KStream, internal_serde
from .ktable import KTable, Lookup, ValueGetter, task_lookup, timestamped_table
from .old_values import JoinedOldValues
from .windows import notice_unchosen_grace

if TYPE_CHECKING:
    from ..app import App

JoinHow = Literal["inner", "left", "outer"]
Joiner = Callable[[Any, Any], Any]  # (left value, right value) -> joined value
Duration = float | timedelta  # seconds, or a timedelta

_PYTHON = PythonSerde()
_DAY_MS = 86_400_000


def _ms(duration: Duration) -> int:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    return round(seconds * 1000)


class JoinWindows:
    """How far apart in event time two records may be to join, and how long unmatched
    records wait for a partner.

    A left record at t joins right records in [t - before, t + after]. Each side
    keeps its records for before + after + grace of its own time, and a record,
    however late, joins what the other side still keeps. Left and outer joins emit
    a record that found no partner once its window and grace have passed (stream
    time past t + after + grace for a left record, t + before + grace for a right
    one), or at once when its window has already ended.
    """

    __slots__ = ("after_ms", "before_ms", "grace_chosen", "grace_ms")

    def __init__(self, *, before: Duration, after: Duration, grace: Duration | None = None) -> None:
        self.before_ms = _ms(before)
        self.after_ms = _ms(after)
        self.grace_chosen = grace is not None
        self.grace_ms = _ms(grace or 0)
        if self.before_ms + self.after_ms < 0:
            raise ConfigError(
                f"JoinWindows: before + after must be >= 0 (the window's size), got "
                f"before={self.before_ms} ms, after={self.after_ms} ms"
            )
        if self.grace_ms < 0:
            raise ConfigError(f"JoinWindows: grace must be >= 0, got {self.grace_ms} ms")

    @classmethod
    def of(cls, difference: Duration, grace: Duration | None = None) -> JoinWindows:
        """Records at most `difference` apart, either way (Kafka's ofTimeDifference...)."""
        return cls(before=difference, after=difference, grace=grace)

    @classmethod
    def of_time_difference_with_no_grace(cls, difference: Duration) -> JoinWindows:
        """Kafka's JoinWindows.ofTimeDifferenceWithNoGrace."""
        return cls(before=difference, after=difference, grace=0)

    @classmethod
    def of_time_difference_and_grace(cls, difference: Duration, grace: Duration) -> JoinWindows:
        """Kafka's JoinWindows.ofTimeDifferenceAndGrace."""
        return cls(before=difference, after=difference, grace=grace)

    def with_before(self, before: Duration) -> JoinWindows:
        """The same windows, reaching `before` back from a left record (Kafka's before())."""
        return JoinWindows(before=before, after=self.after_ms / 1000, grace=self._grace())

    def with_after(self, after: Duration) -> JoinWindows:
        """The same windows, reaching `after` ahead of a left record (Kafka's after())."""
        return JoinWindows(before=self.before_ms / 1000, after=after, grace=self._grace())

    def _grace(self) -> float | None:
        return self.grace_ms / 1000 if self.grace_chosen else None

    def __repr__(self) -> str:
        return (
            f"JoinWindows(before={self.before_ms} ms, after={self.after_ms} ms, "
            f"grace={self.grace_ms} ms)"
        )


# Entry points (KStream / KTable methods call these) ------------------------------------


def stream_join(
    stream: KStream,
    other: Any,
    joiner: Joiner,
    how: JoinHow,
    *,
    window: JoinWindows | None = None,
    key_selector: Callable[[Any, Any], Any] | None = None,
    grace: Duration | None = None,
    name: str | None = None,
) -> KStream:
    _refuse(
        grace is not None and not isinstance(other, KTable),
        "grace= is for stream-table joins (a stream-stream join's is in its JoinWindows)",
    )
    if isinstance(other, KStream):
        if window is None:
            raise ConfigError("a stream-stream join needs window=JoinWindows(...)")
        _refuse(key_selector is not None, "key_selector= is for GlobalKTable joins")
        _same_app(stream.app, other.app)
        return _stream_stream(stream, other, joiner, how, window, name)
    if isinstance(other, KTable):
        _refuse(how == "outer", "a KStream has no outer join with a KTable (Kafka Streams)")
        _refuse(window is not None, "window= is for stream-stream joins")
        _refuse(key_selector is not None, "key_selector= is for GlobalKTable joins")
        _same_app(stream.app, other.app)
        return _stream_table(
            stream, other, joiner, how, None if grace is None else _ms(grace), name
        )
    _refuse(window is not None, "window= is for stream-stream joins")
    joined = _global_join(stream, other, joiner, how, key_selector, name)
    if joined is None:
        raise ConfigError(
            f"a KStream joins a KStream, a KTable or a GlobalKTable, not {type(other).__name__}"
        )
    return joined


def table_join(
    table: KTable,
    other: KTable,
    joiner: Joiner,
    how: JoinHow,
    *,
    foreign_key: Callable[[Any], Any] | None = None,
    name: str | None = None,
) -> KTable:
    if not isinstance(other, KTable):
        raise ConfigError(f"a KTable joins a KTable, not {type(other).__name__}")
    _same_app(table.app, other.app)
    if foreign_key is not None:
        _refuse(how == "outer", "a foreign-key join is inner or left (Kafka Streams)")
        return _foreign_key_join(table, other, joiner, how, foreign_key, name)
    return _table_table(table, other, joiner, how, name)


def _refuse(condition: bool, reason: str) -> None:
    if condition:
        raise ConfigError(reason)


def _same_app(a: App, b: App) -> None:
    if a is not b:
        raise ConfigError(f"cannot join across apps ({a.id!r} and {b.id!r})")


def _global_join(
    stream: KStream,
    other: Any,
    joiner: Joiner,
    how: JoinHow,
    key_selector: Callable[[Any, Any], Any] | None,
    name: str | None,
) -> KStream | None:
    """Lazily: global tables live in their own module, which must not import this one."""
    try:
        from .global_table import GlobalKTable, global_join
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.global_table":
            raise
        return None
    if not isinstance(other, GlobalKTable):
        return None
    _refuse(how == "outer", "a KStream has no outer join with a GlobalKTable (Kafka Streams)")
    if key_selector is None:
        raise ConfigError(
            "a GlobalKTable join needs key_selector=lambda key, value: <the table's key>"
        )
    result: KStream = global_join(stream, other, joiner, how, key_selector, name=name)
    return result


# Shared building blocks ---------------------------------------------------------------


def _combine(how: JoinHow, joiner: Joiner, left: Any, right: Any) -> Any:
    """The joined value of a table row pair, None when the join has no row for it."""
    if left is None and (how != "outer" or right is None):
        return None
    if right is None and how == "inner":
        return None
    return joiner(left, right)


def _stores_behind(node: NodeSpec) -> tuple[Table, ...]:
    """The stores a table's value getter may read: those of the node and its ancestors.

    A lookup node declares them so that it runs in the task that holds them (one
    sub-topology) and its graph reaches their shards.
    """
    found: dict[str, Table] = {}
    pending, seen = [node], {id(node)}
    while pending:
        current = pending.pop()
        found.update((t.name, t) for t in current.stores)
        for parent in current.parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                pending.append(parent)
    return tuple(found.values())


def _copartition(app: App, what: str, left: NodeSpec, right: NodeSpec) -> None:
    app.graph.copartition_groups.append(CopartitionGroup(what=what, sides=(left, right)))


def _changelog(app: App, store: str, key: Serde[Any], value: Serde[Any], **config: str) -> Topic:
    return Topic(f"{app.id}-{store}-changelog", key_type=key, value_type=value, config=config)


# Stream-stream ------------------------------------------------------------------------


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


def _stream_stream(
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
        value_serde = ValuesSerde(_PYTHON)
        pending = PendingJoins(
            store,
            _changelog(app, store, key_serde, value_serde, **{"cleanup.policy": "compact"}),
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
    _copartition(app, f"join {join_name}", left.node, right.node)
    return KStream(app, node, left.key_serde, None)


def _buffer(app: App, store: str, side: KStream, retention_ms: int) -> JoinBuffer:
    """A side's buffer keeps a record while records of the other side may still join it."""
    retention = max(0, retention_ms)
    changelog = _changelog(
        app,
        store,
        internal_serde(None, side.key_serde),
        ValuesSerde(internal_serde(None, side.value_serde)),
        **{"cleanup.policy": "compact,delete", "retention.ms": str(retention + _DAY_MS)},
    )
    buffer = JoinBuffer(store, changelog, retention)
    app.add_store(buffer)
    return buffer


# Stream-table -------------------------------------------------------------------------


class _StreamTableJoin(ops.DslProcessor):
    """Looks the table up as each stream record arrives; table updates emit nothing.
    The result keeps the stream record's timestamp, as in Kafka Streams. A versioned
    table is looked up as of the stream record's timestamp (KIP-914)."""

    def __init__(
        self,
        lookup: Lookup,
        joiner: Joiner,
        left: bool,
        as_of: Callable[[Any, int], ValueAndTimestamp | None] | None = None,
    ) -> None:
        self.lookup = lookup
        self.joiner = joiner
        self.left = left
        self.as_of = as_of

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self.lookup = task_lookup(self.lookup)
        self._emit_parts = ops.parts_taker(self.emit)

    def process(self, record: Record) -> None:
        if record.value is None:
            self.node.dropped(record, "null value")
            return
        if record.key is None:
            # KIP-962: a left join passes a null-key record on, joined with nothing.
            if self.left:
                self.emit(record.with_value(self.joiner(record.value, None)))
            else:
                self.node.dropped(record, "null key")
            return
        if self.as_of is None:
            row = self.lookup(record.key)
        else:
            row = self.as_of(record.key, record.timestamp)
        if row is None:
            if not self.left:
                return
            found = None
        else:
            found = row[0]
        if self._emit_parts is not None:
            self._emit_parts(
                record.key, self.joiner(record.value, found), record.headers, record.timestamp
            )
        else:
            self.emit(
                Record(
                    record.key, self.joiner(record.value, found), record.timestamp, record.headers
                )
            )


class _BufferedStreamTableJoin(_StreamTableJoin):
    """A stream-table join with a grace over a versioned table (KIP-923): a stream
    record waits until the join's stream time is `grace` past it, so that table
    updates up to then (out of order included) reach it; it then joins the version
    valid at its timestamp. Records leave in timestamp order, ties in arrival order;
    one already that far behind joins at once.

    The waiting records are in a store with a changelog, keyed (key, timestamp,
    arrival number), and indexed in memory by (timestamp, arrival number).
    """

    def __init__(
        self,
        lookup: Lookup,
        joiner: Joiner,
        left: bool,
        as_of: Callable[[Any, int], ValueAndTimestamp | None],
        grace_ms: int,
        buffer: PendingJoins,
    ) -> None:
        super().__init__(lookup, joiner, left, as_of)
        self.grace_ms = grace_ms
        self.buffer = buffer
        self._index: SortedList | None = None
        self._next = 0
        self._observed: int | None = None

    def process(self, record: Record) -> None:
        ts = record.timestamp
        observed = self._observed = ts if self._observed is None else max(self._observed, ts)
        deadline = observed - self.grace_ms
        if ts <= deadline or record.key is None or record.value is None:
            super().process(record)  # on time for nothing, or nothing to wait for
        else:
            index = self._waiting()
            self.buffer[record.key, ts, self._next] = [record.value]
            index.add((ts, self._next, record.key))
            self._next += 1
        index = self._waiting()
        while index and index[0][0] <= deadline:
            ts, number, key = index.pop(0)
            row = (key, ts, number)
            values = self.buffer.get(row)
            self.buffer.delete(row)
            for value in values or ():
                super().process(Record(key, value, ts))

    def _waiting(self) -> SortedList:
        if self._index is None:
            self._index = SortedList(
                (ts, number, key) for (key, ts, number), _values in self.buffer.items()
            )
            self._next = 1 + max((entry[1] for entry in self._index), default=-1)
        return self._index


def _stream_table(
    stream: KStream,
    table: KTable,
    joiner: Joiner,
    how: JoinHow,
    grace_ms: int | None,
    name: str | None,
) -> KStream:
    app = stream.app
    table.old_values.materialize()
    stream = stream.keyed_for_grouping(f"{name}-left" if name else None)
    versioned = table.versioned
    as_of = None if versioned is None else versioned.as_of
    left = how == "left"
    prefix = "KSTREAM-JOIN" if how == "inner" else "KSTREAM-LEFTJOIN"
    stores = _stores_behind(table.node)
    if grace_ms is None:

        def factory() -> _StreamTableJoin:
            return _StreamTableJoin(table.lookup, joiner, left, as_of)

    else:
        if versioned is None:
            raise ConfigError(
                "a stream-table join with a grace needs a versioned table: "
                "app.ktable(topic, history_retention=...)"
            )
        if versioned.history_retention_ms < grace_ms:
            raise ConfigError(
                f"the table's history retention ({versioned.history_retention_ms} ms) must be "
                f"at least the join's grace ({grace_ms} ms)"
            )
        store = f"{app.graph.name(prefix, name)}-buffer"
        key_serde = internal_serde(None, stream.key_serde)
        buffer = PendingJoins(
            store,
            _changelog(
                app,
                store,
                key_serde,
                ValuesSerde(internal_serde(None, stream.value_serde)),
                **{"cleanup.policy": "compact"},
            ),
        )
        app.add_store(buffer)
        stores = (*stores, buffer)
        versioned_as_of = versioned.as_of

        def factory() -> _StreamTableJoin:  # type: ignore[misc]
            return _BufferedStreamTableJoin(
                table.lookup, joiner, left, versioned_as_of, grace_ms, buffer
            )

    node = app.graph.add(prefix, factory, (stream.node,), name=name, stores=stores)
    _copartition(app, f"join {node.name}", stream.node, table.node)
    return KStream(app, node, stream.key_serde, None)


# Table-table --------------------------------------------------------------------------


class _TableJoinSide(ops.DslProcessor):
    """An update of one table, joined with the other's current row: old and new results,
    stamped with the later of the update's and the other row's timestamps."""

    def __init__(self, side: int, other: Lookup, joiner: Joiner, how: JoinHow) -> None:
        self.side = side
        self.other = other
        self.joiner = joiner
        self.how = how
        self.needs_other = how == "inner" or (how == "left" and side == RIGHT)

    def process(self, record: Record) -> None:
        if record.key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        row = self.other(record.key)
        if row is None:
            # Kafka's KTableKTable*Join: without the other row, an inner join (and a
            # left join's right side) has nothing to say; the outer sides pass on
            # what changed. With the other row, every update is passed on, even a
            # deletion of a row that was not there (its old value may not be known).
            if self.needs_other or (change.new is None and change.old is None):
                return
            other, ts = None, record.timestamp
        else:
            other, ts = row[0], max(row[1], record.timestamp)
        if self.side == LEFT:
            new = _combine(self.how, self.joiner, change.new, other)
            old = _combine(self.how, self.joiner, change.old, other)
        else:
            new = _combine(self.how, self.joiner, other, change.new)
            old = _combine(self.how, self.joiner, other, change.old)
        self.emit(Record(record.key, Change(new, old), ts, record.headers))


def _table_table(
    left: KTable, right: KTable, joiner: Joiner, how: JoinHow, name: str | None
) -> KTable:
    app, graph = left.app, left.app.graph
    # Kafka's KTableImpl.doJoin: both tables are read by the join; the outer side(s)
    # send old values (a left row without a match is a result to take back later).
    left.old_values.materialize()
    right.old_values.materialize()
    if how != "inner":
        left.old_values.enable(True)
    if how == "outer":
        right.old_values.enable(True)
    this = graph.add(
        "KTABLE-JOINTHIS",
        lambda: _TableJoinSide(LEFT, right.lookup, joiner, how),
        (left.node,),
        name=f"{name}-this" if name else None,
        stores=_stores_behind(right.node),
    )
    that = graph.add(
        "KTABLE-JOINOTHER",
        lambda: _TableJoinSide(RIGHT, left.lookup, joiner, how),
        (right.node,),
        name=f"{name}-other" if name else None,
        stores=_stores_behind(left.node),
    )
    merge = graph.add("KTABLE-MERGE", ops.PassThrough, (this, that), name=name)
    left_get, right_get = left.lookup, right.lookup

    def get(key: Any) -> ValueAndTimestamp | None:
        lrow, rrow = left_get(key), right_get(key)
        lval = None if lrow is None else lrow[0]
        rval = None if rrow is None else rrow[0]
        joined = _combine(how, joiner, lval, rval)
        if joined is None:
            return None
        stamps = [r[1] for r in (lrow, rrow) if r is not None]
        return ValueAndTimestamp(joined, max(stamps))

    _copartition(app, f"join {merge.name}", left.node, right.node)
    old_values = JoinedOldValues(left.old_values, right.old_values)
    return KTable(app, merge, left.key_serde, None, get, old_values)


# Foreign-key table-table (KIP-213) ---------------------------------------------------

_SUBSCRIBE, _UNSUBSCRIBE = 1, 0


def _settle(
    result: Table, key: Any, new: Any, source: Record, *, tombstone: bool = False
) -> Record | None:
    """Store a left row's new join result; the change to pass on, if anything changed.

    `tombstone`: a None result is passed on even when no result was stored. Kafka
    Streams does this for a left row that existed before (deleted, or moved to a
    foreign key without a match): it cannot know whether a result went out.
    """
    held = result.get(key)
    old = None if held is None else held[0]
    if new is None:
        if held is None and not tombstone:
            return None
        if held is not None:
            result.delete(key)
    else:
        result[key] = ValueAndTimestamp(new, source.timestamp)
    return Record(key, Change(new, old), source.timestamp, source.headers)


class _SubscriptionSend(ops.DslProcessor):
    """Left side: subscribe each row to its foreign key, unsubscribe it from the old one.

    A row without a foreign key (deleted, or referencing nothing) needs no answer
    from the right side: its result is settled here.
    """

    def __init__(
        self,
        foreign_key: Callable[[Any], Any],
        joiner: Joiner,
        left: bool,
        result: Table,
        sink: str,
        output: str,
    ) -> None:
        self.foreign_key = foreign_key
        self.joiner = joiner
        self.left = left
        self.result = result
        self.sink = sink
        self.output = output

    def process(self, record: Record) -> None:
        key = record.key
        if key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        new_fk = None if change.new is None else self.foreign_key(change.new)
        old_fk = None if change.old is None else self.foreign_key(change.old)
        ts, headers = record.timestamp, record.headers
        # A row that existed before has its result replaced even by "nothing to join".
        existed = change.old is not None
        if old_fk is not None and old_fk != new_fk:
            self.context.forward(
                Record(old_fk, (_UNSUBSCRIBE, key, False), ts, headers), to=self.sink
            )
        if new_fk is not None:
            self.context.forward(
                Record(new_fk, (_SUBSCRIBE, key, existed), ts, headers), to=self.sink
            )
            return
        if change.new is not None and not self.left:
            self.node.dropped(record, "null foreign key")
        new = self.joiner(change.new, None) if self.left and change.new is not None else None
        settled = _settle(self.result, key, new, record, tombstone=existed)
        if settled is not None:
            self.context.forward(settled, to=self.output)


class _SubscriptionReceive(ops.DslProcessor):
    """Right side: record who references a foreign key; answer with the right row now."""

    def __init__(self, subscriptions: SubscriptionStore, right: ValueGetter) -> None:
        self.subscriptions = subscriptions
        self.right = right

    def process(self, record: Record) -> None:
        foreign_key = record.key
        op, left_key, existed = record.value
        row = (foreign_key, left_key)
        if op == _UNSUBSCRIBE:
            if row in self.subscriptions:
                self.subscriptions.delete(row)
            return
        if row not in self.subscriptions:
            self.subscriptions[row] = 1
        right = self.right(foreign_key)
        self.emit(Record(left_key, (foreign_key, right, existed), record.timestamp, record.headers))


class _ForeignChange(ops.DslProcessor):
    """Right side: a right row changed; every left row referencing it gets the new value."""

    def __init__(self, subscriptions: SubscriptionStore) -> None:
        self.subscriptions = subscriptions

    def process(self, record: Record) -> None:
        if record.key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        for left_key in self.subscriptions.subscribers(record.key):
            self.emit(
                Record(left_key, (record.key, change.new, False), record.timestamp, record.headers)
            )


class _ResponseJoin(ops.DslProcessor):
    """Left side: join a right row with the left row as it is now.

    A response for a foreign key the left row no longer references is stale (a
    later subscription, or the row's deletion, decides) and is ignored, as KIP-213
    ignores responses whose hash no longer matches. Responses of one foreign key
    arrive in order, so the last one carries the right row's latest value.
    """

    def __init__(
        self,
        left: ValueGetter,
        foreign_key: Callable[[Any], Any],
        joiner: Joiner,
        left_join: bool,
        result: Table,
    ) -> None:
        self.left = left
        self.foreign_key = foreign_key
        self.joiner = joiner
        self.left_join = left_join
        self.result = result

    def process(self, record: Record) -> None:
        foreign_key, right, existed = record.value
        current = self.left(record.key)
        if current is None or self.foreign_key(current) != foreign_key:
            return
        new = None if right is None and not self.left_join else self.joiner(current, right)
        settled = _settle(self.result, record.key, new, record, tombstone=existed)
        if settled is not None:
            self.emit(settled)


def _foreign_key_join(
    left: KTable,
    right: KTable,
    joiner: Joiner,
    how: JoinHow,
    foreign_key: Callable[[Any], Any],
    name: str | None,
) -> KTable:
    app, graph = left.app, left.app.graph
    # Kafka's KTableImpl.doJoinOnForeignKey: both sides send old values (a row that
    # moves to another foreign key unsubscribes from the old one).
    for table in (left, right):
        table.old_values.materialize()
        table.old_values.enable(True)
    base = name or graph.name("KTABLE-FK-JOIN", None)
    fk_serde = internal_serde(None, right.key_serde)
    key_serde = internal_serde(None, left.key_serde)
    registration = app.repartition_topic(
        base, fk_serde, _PYTHON, None, suffix="subscription-registration"
    )
    response = app.repartition_topic(base, key_serde, _PYTHON, None, suffix="subscription-response")
    result = timestamped_table(app, f"{base}-output-store", key_serde, _PYTHON)
    store = f"{base}-subscription-store"
    subscriptions = SubscriptionStore(
        store,
        _changelog(app, store, fk_serde, serde_for(int), **{"cleanup.policy": "compact"}),
        key_serde,
    )
    app.add_store(subscriptions)
    names = {
        part: f"{base}-{part}"
        for part in (
            "subscription-send",
            "subscription-registration-sink",
            "subscription-registration-source",
            "subscription-receive",
            "foreign-change",
            "subscription-response-sink",
            "subscription-response-source",
            "response-join",
            "output",
        )
    }
    left_join = how == "left"

    # Left side: subscriptions out.
    send = graph.add(
        "KTABLE-FK-JOIN-SUBSCRIPTION-SEND",
        lambda: _SubscriptionSend(
            foreign_key,
            joiner,
            left_join,
            result,
            names["subscription-registration-sink"],
            names["output"],
        ),
        (left.node,),
        name=names["subscription-send"],
        stores=(result,),
    )
    _sink(app, registration, send, names["subscription-registration-sink"])

    # Right side: subscriptions in, right rows out (on subscription and on change).
    incoming = _source(app, registration, names["subscription-registration-source"])
    receive = graph.add(
        "KTABLE-FK-JOIN-SUBSCRIPTION-RECEIVE",
        lambda: _SubscriptionReceive(subscriptions, right.getter),
        (incoming,),
        name=names["subscription-receive"],
        stores=(subscriptions, *_stores_behind(right.node)),
    )
    changes = graph.add(
        "KTABLE-FK-JOIN-FOREIGN-CHANGE",
        lambda: _ForeignChange(subscriptions),
        (right.node,),
        name=names["foreign-change"],
        stores=(subscriptions,),
    )
    _sink(app, response, receive, names["subscription-response-sink"], changes)

    # Left side: responses in, results out.
    answers = _source(app, response, names["subscription-response-source"])
    joined = graph.add(
        "KTABLE-FK-JOIN-RESPONSE",
        lambda: _ResponseJoin(left.getter, foreign_key, joiner, left_join, result),
        (answers,),
        name=names["response-join"],
        stores=(result, *_stores_behind(left.node)),
    )
    output = graph.add(
        "KTABLE-FK-JOIN-OUTPUT", ops.PassThrough, (send, joined), name=names["output"]
    )

    _copartition(app, f"foreign-key join {base} (subscriptions)", incoming, right.node)
    _copartition(app, f"foreign-key join {base} (responses)", answers, left.node)
    return KTable(app, output, left.key_serde, None, result.get)


def _sink(app: App, topic: Topic, parent: NodeSpec, name: str, *more: NodeSpec) -> NodeSpec:
    return app.graph.add(
        "KSTREAM-SINK",
        lambda: ops.Sink(topic, {}),
        (parent, *more),
        name=name,
        kind=NodeKind.SINK,
        topics=(topic,),
    )


def _source(app: App, topic: Topic, name: str) -> NodeSpec:
    return app.graph.add(
        "KSTREAM-SOURCE", ops.PassThrough, (), name=name, kind=NodeKind.SOURCE, topics=(topic,)
    )
