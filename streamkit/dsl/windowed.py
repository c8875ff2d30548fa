"""Windowed aggregations of a grouped stream: count, reduce and aggregate per window.

`grouped.windowed_by(TimeWindows | SlidingWindows | SessionWindows)` gives a
windowed grouped stream; its aggregations are KTables keyed by
`Windowed(key, start_ms, end_ms)`, with Kafka Streams' semantics:

- Stream time is the task's: the largest record timestamp it has seen. A window
  is closed once stream time reaches its end plus the grace period (a session's
  end + gap + grace: no later record can reach it then). A record whose windows
  are all closed is late: counted in `streamkit_dropped_records{reason="late"}`
  and dropped, or written unchanged to `late_topic` (and still counted). A record
  too late for only some of its windows (hopping, sliding) updates the others and
  is counted as "late for some windows".
- `emit="update"` forwards every change of a window. `emit="final"` forwards each
  window once, when it closes, as Kafka's `suppress(untilWindowCloses)` does: the
  windows not emitted yet wait in a store with a changelog, so a failover neither
  loses them nor emits one twice. A record that would change an emitted window is
  late.
- A record that falls in existing sessions retracts them downstream (a record
  with the old windowed key and the value None, stamped with its end) before the
  merged session's result, as Kafka Streams does, even when the session's bounds
  do not change; only a record at the very instant of a one-instant session
  updates it in place.
- Results carry the latest timestamp among the records in them (the larger of the
  record's and the window's previous one), as Kafka Streams stamps them; a
  session's carry its end.
- The aggregation's store (`name=`; `driver.store(name)`) holds the aggregate per
  `Windowed` key, for the retention of its windows (at least their size, or gap,
  plus the grace; `retention=` for longer), as `ValueAndTimestamp(value, timestamp)` rows
  (`driver.timestamped_store(name)`); the latest record time is also how a
  sliding window's record finds its neighbouring windows.

One deliberate difference from Kafka Streams: with `emit="final"`, windows also
close when the input goes quiet. Kafka Streams closes windows only as stream time
advances, so a partition that stops receiving records never emits its last
windows, a long-standing complaint against stream processing libraries. Here a
wall-clock punctuation runs every `close_idle_after` seconds (default 1 s): when no
record has advanced the task's stream time for that long, it takes stream time to
have moved on by the wall-clock time elapsed since the last record that did, and
emits the windows that are then closed. A record that arrives later for one of
those windows is late, as if stream time had really advanced. After a restart
with no input yet, the latest record time among the windows still pending stands
in for the stream time. `close_idle_after=None` keeps Kafka's behaviour.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from ..processor import ProcessorFactory
from ..serde import Serde, serde_for
from ..state.table import Table
from ..state.window_stores import (
    PendingWindows,
    SessionStore,
    TimestampedSerde,
    TimeWindowStore,
    ValueAndTimestamp,
    Windowed,
)
from ..topic import Topic
from .aggregate import Aggregator, Initializer, reducer_as_aggregator
from .kstream import internal_serde
from .ktable import KTable, Lookup
from .window_aggregates import (
    Merger,
    SessionWindowAggregate,
    SlidingWindowAggregate,
    TimeWindowAggregate,
    WindowOptions,
    WindowSetup,
)
from .windows import (
    Duration,
    SessionWindows,
    SlidingWindows,
    TimeWindows,
    duration_ms,
    notice_unchosen_grace,
)

if TYPE_CHECKING:
    from ..app import App
    from .kstream import KGroupedStream, KStream

Emit = Literal["update", "final"]
_DAY_MS = 86_400_000


def windowed_stream(
    grouped: KGroupedStream, windows: TimeWindows | SlidingWindows | SessionWindows
) -> TimeWindowedKStream | SessionWindowedKStream:
    if isinstance(windows, SessionWindows):
        return SessionWindowedKStream(grouped, windows)
    if isinstance(windows, TimeWindows | SlidingWindows):
        return TimeWindowedKStream(grouped, windows)
    raise ConfigError(
        "windowed_by() takes TimeWindows, SlidingWindows or SessionWindows, "
        f"not {type(windows).__name__}"
    )


# The user's side -------------------------------------------------------------------------


def _emit_options(
    app: App,
    emit: str,
    late_topic: Topic | None,
    close_idle_after: Duration | None,
    retention: Duration | None = None,
) -> WindowOptions:
    if emit not in ("update", "final"):
        raise ConfigError(f"emit must be 'update' or 'final', got {emit!r}")
    if late_topic is not None:
        app.check_declared(late_topic)
    idle_ms = None if close_idle_after is None else duration_ms(close_idle_after)
    if idle_ms is not None and idle_ms <= 0:
        raise ConfigError(f"close_idle_after must be > 0 seconds or None, got {close_idle_after!r}")
    retention_ms = None if retention is None else duration_ms(retention)
    return WindowOptions(emit == "final", late_topic, idle_ms, retention_ms)


def _count(_key: Any, _value: Any, n: int) -> int:
    return n + 1


def _sum(_key: Any, a: int, b: int) -> int:
    return a + b


class _WindowedKStream(abc.ABC):
    def __init__(self, grouped: KGroupedStream) -> None:
        self.grouped = grouped

    def count(
        self,
        *,
        name: str | None = None,
        emit: Emit = "update",
        late_topic: Topic | None = None,
        close_idle_after: Duration | None = 1.0,
        retention: Duration | None = None,
    ) -> KTable:
        """Records per key and window."""
        options = _emit_options(self._app, emit, late_topic, close_idle_after, retention)
        return self._build(int, _count, _sum, name, serde_for(int), "KSTREAM-AGGREGATE", options)

    def reduce(
        self,
        reducer: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        value_type: Any = None,
        emit: Emit = "update",
        late_topic: Topic | None = None,
        close_idle_after: Duration | None = 1.0,
        retention: Duration | None = None,
    ) -> KTable:
        """`reducer(aggregate, value) -> aggregate`; a window's first value is its start."""
        initializer, adder = reducer_as_aggregator(reducer)
        first = initializer()

        def merge(_key: Any, a: Any, b: Any) -> Any:
            return b if a is first else reducer(a, b)

        serde = internal_serde(value_type, self.grouped.stream.value_serde)
        options = _emit_options(self._app, emit, late_topic, close_idle_after, retention)
        return self._build(initializer, adder, merge, name, serde, "KSTREAM-REDUCE", options)

    @property
    def _app(self) -> App:
        return self.grouped.stream.app

    @abc.abstractmethod
    def _build(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        merger: Merger | None,
        name: str | None,
        value_serde: Serde[Any],
        prefix: str,
        options: WindowOptions,
    ) -> KTable: ...

    def _store_name(self, name: str | None, prefix: str) -> str:
        return name or self._app.graph.name(f"{prefix}-STATE-STORE", None)

    def _finish(
        self,
        prefix: str,
        factory: ProcessorFactory,
        stores: tuple[Table, ...],
        value_serde: Serde[Any],
        lookup: Lookup,
        closes_after_ms: int,
    ) -> KTable:
        stream: KStream = self.grouped.stream
        node = self._app.graph.add(prefix, factory, (stream.node,), stores=stores)
        table = KTable(self._app, node, stores[0].changelog.key_serde, value_serde, lookup)
        table.suppress_grace_ms = closes_after_ms
        return table


class TimeWindowedKStream(_WindowedKStream):
    """A grouped stream in tumbling, hopping or sliding windows."""

    def __init__(self, grouped: KGroupedStream, windows: TimeWindows | SlidingWindows) -> None:
        super().__init__(grouped)
        self.windows = windows

    def aggregate(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        *,
        name: str | None = None,
        value_type: Any = None,
        emit: Emit = "update",
        late_topic: Topic | None = None,
        close_idle_after: Duration | None = 1.0,
        retention: Duration | None = None,
    ) -> KTable:
        """`aggregator(key, value, aggregate) -> aggregate`, each window from `initializer()`."""
        options = _emit_options(self._app, emit, late_topic, close_idle_after, retention)
        serde = internal_serde(value_type, None)
        return self._build(initializer, aggregator, None, name, serde, "KSTREAM-AGGREGATE", options)

    def _build(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        merger: Merger | None,
        name: str | None,
        value_serde: Serde[Any],
        prefix: str,
        options: WindowOptions,
    ) -> KTable:
        app, windows = self._app, self.windows
        store_name = self._store_name(name, prefix)
        notice_unchosen_grace(windows, f"aggregation {store_name!r}")
        key_serde = internal_serde(None, self.grouped.stream.key_serde)
        # Windows keep each aggregate's latest record time: it stamps the results, and
        # sliding windows find their neighbours by it.
        size = (
            windows.time_difference_ms if isinstance(windows, SlidingWindows) else windows.size_ms
        )
        stored = TimestampedSerde(value_serde)
        retention_ms = options.store_retention_ms(windows)
        changelog = _window_changelog(app, store_name, key_serde, stored, retention_ms)
        store = TimeWindowStore(
            store_name,
            changelog,
            size,
            retention_ms,
            advance_ms=None if isinstance(windows, SlidingWindows) else windows.advance_ms,
            final=options.final,
        )
        app.add_store(store)
        pending = _pending(app, store, key_serde, value_serde, options)
        setup = WindowSetup(
            store, pending, initializer, aggregator, windows.closes_at, options, windows.grace_ms
        )
        if isinstance(windows, SlidingWindows):
            factory: ProcessorFactory = partial(SlidingWindowAggregate, setup, windows)
        else:
            factory = partial(TimeWindowAggregate, setup, windows)
        return self._finish(prefix, factory, setup.stores, value_serde, store.get, windows.grace_ms)


def _session_row(store: Table, window: Windowed) -> ValueAndTimestamp | None:
    """A session's result is stamped with its end, which its key holds."""
    value = store.get(window)
    return None if value is None else ValueAndTimestamp(value, window.end_ms)


class SessionWindowedKStream(_WindowedKStream):
    """A grouped stream in sessions: aggregates merge when sessions do."""

    def __init__(self, grouped: KGroupedStream, windows: SessionWindows) -> None:
        super().__init__(grouped)
        self.windows = windows

    def aggregate(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        *,
        merger: Merger,
        name: str | None = None,
        value_type: Any = None,
        emit: Emit = "update",
        late_topic: Topic | None = None,
        close_idle_after: Duration | None = 1.0,
        retention: Duration | None = None,
    ) -> KTable:
        """`aggregator(key, value, aggregate)`; `merger(key, agg1, agg2) -> aggregate`
        combines two sessions a record bridges."""
        options = _emit_options(self._app, emit, late_topic, close_idle_after, retention)
        serde = internal_serde(value_type, None)
        return self._build(
            initializer, aggregator, merger, name, serde, "KSTREAM-AGGREGATE", options
        )

    def _build(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        merger: Merger | None,
        name: str | None,
        value_serde: Serde[Any],
        prefix: str,
        options: WindowOptions,
    ) -> KTable:
        app, windows = self._app, self.windows
        store_name = self._store_name(name, prefix)
        notice_unchosen_grace(windows, f"aggregation {store_name!r}")
        key_serde = internal_serde(None, self.grouped.stream.key_serde)
        retention_ms = options.store_retention_ms(windows)
        changelog = _window_changelog(app, store_name, key_serde, value_serde, retention_ms)
        store = SessionStore(store_name, changelog, retention_ms)
        app.add_store(store)
        pending = _pending(app, store, key_serde, value_serde, options)
        setup = WindowSetup(
            store, pending, initializer, aggregator, windows.closes_at, options, windows.grace_ms
        )
        assert merger is not None  # count, reduce and aggregate always pass one
        factory = partial(SessionWindowAggregate, setup, windows, merger)
        return self._finish(
            prefix,
            factory,
            setup.stores,
            value_serde,
            partial(_session_row, store),
            windows.gap_ms + windows.grace_ms,
        )


def _window_changelog(
    app: App, store: str, key: Serde[Any], value: Serde[Any], retention_ms: int
) -> Topic:
    """Compacted, and deleted by time a day after the store forgets its windows."""
    config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms + _DAY_MS)}
    return Topic(f"{app.id}-{store}-changelog", key_type=key, value_type=value, config=config)


def _pending(
    app: App, store: Table, key_serde: Serde[Any], value_serde: Serde[Any], options: WindowOptions
) -> PendingWindows | None:
    """Emit-final's buffer, `{store}-suppress`, keyed like the window store."""
    if not options.final:
        return None
    name = f"{store.name}-suppress"
    changelog = Topic(
        f"{app.id}-{name}-changelog",
        key_type=key_serde,
        value_type=TimestampedSerde(value_serde),
        config={"cleanup.policy": "compact"},
    )
    pending = PendingWindows(name, changelog, store.changelog.key_serde)
    app.add_store(pending)
    return pending
