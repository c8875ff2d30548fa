"""KTable: the latest value per key, and the changes that make it.

Table nodes pass `Change(new, old)` values among themselves; `to_stream()` turns
them back into plain records (a deletion is a record with value None). A derived
table (filter, map_values) keeps no store of its own: lookups (joins) go through
a value getter that applies the derivation to its parent's value, as Kafka
Streams' KTableValueGetter does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..processor import Record
from ..serde import Serde
from ..state.table import Table, current_stores
from ..state.timestamped import TimestampedSerde, ValueAndTimestamp
from . import operators as ops
from .aggregate import Aggregator, Change, Initializer, TableAggregate, TableRegroup
from .kstream import KStream, internal_serde
from .old_values import DerivedOldValues, OldValues

if TYPE_CHECKING:
    from ..app import App
    from ..state.versioned import VersionedTable
    from .graph import NodeSpec
    from .suppress import Suppressed

ValueGetter = Callable[[Any], Any]  # key -> current value or None; valid inside the task
# key -> ValueAndTimestamp(current value, its timestamp) or None; valid inside the task
Lookup = Callable[[Any], ValueAndTimestamp | None]


def timestamped_table(app: App, name: str, key_serde: Serde[Any], value_serde: Serde[Any]) -> Table:
    """An aggregation's store: `ValueAndTimestamp` rows, with a changelog of its own."""
    table = app.table(name, key_type=key_serde, value_type=TimestampedSerde(value_serde))
    table.timestamped = True
    return table


def task_lookup(lookup: Lookup) -> Lookup:
    """A lookup for a node to keep: a table's own `get` resolved once to the running
    task's shard, so that a read per record skips the table's search for the shard
    of the task in hand. Call it where the task's stores are in reach (`init`)."""
    table = getattr(lookup, "__self__", None)
    if not isinstance(table, Table) or getattr(lookup, "__func__", None) is not Table.get:
        return lookup
    shard = current_stores.get({}).get(table.name)
    # Not the task's: the table's own get says why, when a record asks.
    return lookup if shard is None else shard.get


class _TableFilter(ops.DslProcessor):
    def __init__(self, predicate: ops.KeyValueFn, keep_if: bool, old_values: bool) -> None:
        self.predicate = predicate
        self.keep_if = keep_if
        # Without old values Kafka Streams' filter cannot know whether a key it drops
        # passed before, so it passes the deletion on (module docstring of old_values).
        self.skip_unchanged = old_values

    def _keep(self, key: Any, value: Any) -> Any:
        if value is None or bool(self.predicate(key, value)) is not self.keep_if:
            return None
        return value

    def process(self, record: Record) -> None:
        change: Change = record.value
        new, old = self._keep(record.key, change.new), self._keep(record.key, change.old)
        if new is None and old is None and self.skip_unchanged:
            return  # neither side passes: nothing changed downstream
        self.emit(record.with_value(Change(new, old)))


class _TableMapValues(ops.DslProcessor):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        change: Change = record.value
        fn = self.fn
        new = None if change.new is None else fn(change.new)
        old = None if change.old is None else fn(change.old)
        self.emit(record.with_value(Change(new, old)))


class _ToStream(ops.DslProcessor):
    def process(self, record: Record) -> None:
        self.emit(Record(record.key, record.value.new, record.timestamp, record.headers))


def values_downstream(node: ops.DslProcessor) -> Callable[[Record], None] | None:
    """For a table node whose one child is a `to_stream()`: where that child sends its
    records, so that the table node can send its new values there itself (records
    keyed as its changes, valued by their new value), one node and one record fewer
    per update. None otherwise."""
    children = node.node.node.children
    if len(children) != 1 or children[0].factory is not _ToStream:
        return None
    return node.node.child_downstream()


class KTable:
    def __init__(
        self,
        app: App,
        node: NodeSpec,
        key_serde: Serde[Any] | None,
        value_serde: Serde[Any] | None,
        lookup: Lookup,
        old_values: OldValues | None = None,
    ) -> None:
        self.app = app
        self.node = node
        self.key_serde = key_serde
        self.value_serde = value_serde
        # Reads the table's current row (value and timestamp) for a key from inside a
        # task of its graph.
        self.lookup = lookup
        # A windowed aggregation's table: how long after a window's end it closes (the
        # grace; a session's gap too), which suppress(until_window_closes) waits for.
        self.suppress_grace_ms: int | None = None
        # A versioned table's store: a stream joins it as of each record's timestamp.
        self.versioned: VersionedTable | None = None
        # Whether its updates carry old values as Kafka Streams' would (old_values.py).
        self.old_values = old_values or OldValues()

    @property
    def getter(self) -> ValueGetter:
        """The current value for a key, without its timestamp."""
        lookup = self.lookup

        def get(key: Any) -> Any:
            row = lookup(key)
            return None if row is None else row[0]

        return get

    def __repr__(self) -> str:
        return f"<KTable {self.node.name}>"

    def _derive(
        self,
        prefix: str,
        processor: Callable[[], ops.DslProcessor],
        name: str | None,
        lookup: Lookup,
        value_serde: Serde[Any] | None,
        old_values: OldValues,
    ) -> KTable:
        node = self.app.graph.add(prefix, processor, (self.node,), name=name)
        return KTable(self.app, node, self.key_serde, value_serde, lookup, old_values)

    def filter(self, predicate: ops.KeyValueFn, *, name: str | None = None) -> KTable:
        """Keys whose value passes; a value that stops passing is a deletion downstream."""
        parent = self.lookup

        def get(key: Any) -> ValueAndTimestamp | None:
            row = parent(key)
            return row if row is not None and predicate(key, row[0]) else None

        # Kafka's KTableFilter asks its parent at once, without force: a table with a
        # store of its own sends old values, and the filter drops what never passed.
        old = DerivedOldValues(self.old_values, sent=self.old_values.enable(False))
        return self._derive(
            "KTABLE-FILTER",
            lambda: _TableFilter(predicate, True, old.sent and not old.versioned),
            name,
            get,
            self.value_serde,
            old,
        )

    def filter_not(self, predicate: ops.KeyValueFn, *, name: str | None = None) -> KTable:
        return self.filter(lambda k, v: not predicate(k, v), name=name)

    def map_values(self, fn: Callable[[Any], Any], *, name: str | None = None) -> KTable:
        parent = self.lookup

        def get(key: Any) -> ValueAndTimestamp | None:
            row = parent(key)
            return None if row is None else ValueAndTimestamp(fn(row[0]), row[1])

        return self._derive(
            "KTABLE-MAPVALUES",
            lambda: _TableMapValues(fn),
            name,
            get,
            None,
            DerivedOldValues(self.old_values),
        )

    def suppress(self, suppressed: Suppressed, *, name: str | None = None) -> KTable:
        """Hold updates back: until a time limit passes, or until their window closes
        (`sk.Suppressed.until_time_limit(...)` / `until_window_closes(...)`)."""
        from .suppress import suppress

        return suppress(self, suppressed, name)

    def to_stream(self, *, name: str | None = None) -> KStream:
        """Every update as a record: (key, new value), value None for a deletion."""
        node = self.app.graph.add("KTABLE-TOSTREAM", _ToStream, (self.node,), name=name)
        return KStream(self.app, node, self.key_serde, self.value_serde)

    def group_by(
        self,
        selector: Callable[[Any, Any], tuple[Any, Any] | None],
        *,
        name: str | None = None,
        key_type: Any = None,
        value_type: Any = None,
    ) -> KGroupedTable:
        """Re-key rows with `selector(key, value) -> (key, value)` to aggregate them.

        A row for which it returns None (or a None key or value) joins no group."""
        graph = self.app.graph
        self.old_values.enable(True)  # the groups subtract a row's old value
        regroup = graph.add("KTABLE-SELECT", lambda: TableRegroup(selector), (self.node,))
        base = name or graph.name("KTABLE-REPARTITION", None)
        stream = KStream(self.app, regroup, None, None, rekeyed=True)
        # Change values cross as Python objects; value_type is the aggregate's.
        stream = stream._repartitioned(base, None, key_type, None)
        return KGroupedTable(stream, internal_serde(value_type, None))

    # Joins (implemented in joins.py) -------------------------------------------------

    def join(
        self,
        other: KTable,
        joiner: Callable[[Any, Any], Any],
        *,
        foreign_key: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> KTable:
        """Table-table inner join on the key; with `foreign_key(value) -> other's key`,
        the foreign-key join."""
        from .joins import table_join

        return table_join(self, other, joiner, "inner", foreign_key=foreign_key, name=name)

    def left_join(
        self,
        other: KTable,
        joiner: Callable[[Any, Any], Any],
        *,
        foreign_key: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> KTable:
        from .joins import table_join

        return table_join(self, other, joiner, "left", foreign_key=foreign_key, name=name)

    def outer_join(
        self, other: KTable, joiner: Callable[[Any, Any], Any], *, name: str | None = None
    ) -> KTable:
        from .joins import table_join

        return table_join(self, other, joiner, "outer", name=name)


class KGroupedTable:
    """A table's rows grouped by a new key: adders and subtractors keep aggregates right."""

    def __init__(self, stream: KStream, value_serde: Serde[Any]) -> None:
        self.stream = stream
        self.value_serde = value_serde

    def aggregate(
        self,
        initializer: Initializer,
        adder: Aggregator,
        subtractor: Aggregator,
        *,
        name: str | None = None,
        value_type: Any = None,
    ) -> KTable:
        """`adder(key, value, agg)` for rows joining a group, `subtractor` for rows leaving."""
        return self._fold(initializer, adder, subtractor, name, internal_serde(value_type, None))

    def reduce(
        self,
        adder: Callable[[Any, Any], Any],
        subtractor: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        value_type: Any = None,
    ) -> KTable:
        none: Any = object()

        def add(_key: Any, value: Any, agg: Any) -> Any:
            return value if agg is none else adder(agg, value)

        def subtract(_key: Any, value: Any, agg: Any) -> Any:
            return subtractor(agg, value)

        return self._fold(
            lambda: none, add, subtract, name, internal_serde(value_type, self.value_serde)
        )

    def count(self, *, name: str | None = None) -> KTable:
        from ..serde import serde_for

        return self._fold(
            int, lambda _k, _v, n: n + 1, lambda _k, _v, n: n - 1, name, serde_for(int)
        )

    def _fold(
        self,
        initializer: Initializer,
        adder: Aggregator,
        subtractor: Aggregator,
        name: str | None,
        value_serde: Serde[Any],
    ) -> KTable:
        app = self.stream.app
        store = name or app.graph.name("KTABLE-AGGREGATE-STATE-STORE", None)
        table = timestamped_table(
            app, store, internal_serde(None, self.stream.key_serde), value_serde
        )
        node = app.graph.add(
            "KTABLE-AGGREGATE",
            lambda: TableAggregate(table, initializer, adder, subtractor),
            (self.stream.node,),
            stores=(table,),
        )
        return KTable(app, node, self.stream.key_serde, value_serde, table.get)
