"""KStream: every record of a topic, transformed by chained operators.

Each call adds processor nodes to the app's graph and returns a new KStream; the
graph runs inside the tasks of the topology like agents do. An operator that may
change the key (map, flat_map, select_key) marks the stream; the next operator
that needs records grouped by key (group_by_key, a join) first sends them
through a repartition topic, `{app_id}-{name}-repartition`, so that equal keys
meet in one task (DESIGN.md: Repartition topic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..processor import Processor, ProcessorFactory
from ..serde import PythonSerde, Serde, serde_for
from ..state.table import Table
from ..topic import Topic
from . import operators as ops
from .aggregate import Aggregator, Initializer, StreamAggregate, reducer_as_aggregator
from .graph import NodeKind, NodeSpec

if TYPE_CHECKING:
    from ..app import App
    from .global_table import GlobalKTable
    from .ktable import KTable
    from .windowed import SessionWindowedKStream, TimeWindowedKStream
    from .windows import JoinWindows, SessionWindows, SlidingWindows, TimeWindows

_PYTHON = PythonSerde()
Duration = float | timedelta


def internal_serde(declared: Any, known: Serde[Any] | None) -> Serde[Any]:
    """The serde of an internal topic or store: declared, else inherited, else Python's."""
    if declared is not None:
        return serde_for(declared)
    return known if known is not None else _PYTHON


class KStream:
    def __init__(
        self,
        app: App,
        node: NodeSpec,
        key_serde: Serde[Any] | None,
        value_serde: Serde[Any] | None,
        *,
        rekeyed: bool = False,
    ) -> None:
        self.app = app
        self.node = node
        # What the records' keys and values serialize with, while known (None: unknown).
        self.key_serde = key_serde
        self.value_serde = value_serde
        # True once the key may have changed: grouping or joining repartitions first.
        self.rekeyed = rekeyed

    def __repr__(self) -> str:
        return f"<KStream {self.node.name}>"

    # Building blocks -------------------------------------------------------------

    def _then(
        self,
        prefix: str,
        processor: ProcessorFactory,
        name: str | None,
        *,
        key_changes: bool = False,
        value_changes: bool = False,
        stores: Iterable[Table] = (),
    ) -> KStream:
        node = self.app.graph.add(prefix, processor, (self.node,), name=name, stores=stores)
        return KStream(
            self.app,
            node,
            None if key_changes else self.key_serde,
            None if value_changes else self.value_serde,
            rekeyed=self.rekeyed or key_changes,
        )

    # Stateless operators -----------------------------------------------------------

    def filter(self, predicate: ops.KeyValueFn, *, name: str | None = None) -> KStream:
        """Records for which `predicate(key, value)` is true."""
        return self._then("KSTREAM-FILTER", lambda: ops.Filter(predicate, True), name)

    def filter_not(self, predicate: ops.KeyValueFn, *, name: str | None = None) -> KStream:
        return self._then("KSTREAM-FILTER", lambda: ops.Filter(predicate, False), name)

    def map(self, fn: Callable[[Any, Any], tuple[Any, Any]], *, name: str | None = None) -> KStream:
        """`fn(key, value) -> (key, value)`; a new key means a repartition before grouping."""
        return self._then(
            "KSTREAM-MAP", lambda: ops.Map(fn), name, key_changes=True, value_changes=True
        )

    def map_values(self, fn: Callable[[Any], Any], *, name: str | None = None) -> KStream:
        """`fn(value) -> value`; the key stays, so no repartition follows."""
        return self._then("KSTREAM-MAPVALUES", lambda: ops.MapValues(fn), name, value_changes=True)

    def select_key(self, fn: ops.KeyValueFn, *, name: str | None = None) -> KStream:
        """`fn(key, value) -> new key`."""
        return self._then("KSTREAM-KEY-SELECT", lambda: ops.SelectKey(fn), name, key_changes=True)

    def flat_map(
        self,
        fn: Callable[[Any, Any], Iterable[tuple[Any, Any]]],
        *,
        name: str | None = None,
    ) -> KStream:
        """`fn(key, value) -> iterable of (key, value)`: zero or more records per record."""
        return self._then(
            "KSTREAM-FLATMAP", lambda: ops.FlatMap(fn), name, key_changes=True, value_changes=True
        )

    def flat_map_values(
        self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None
    ) -> KStream:
        return self._then(
            "KSTREAM-FLATMAPVALUES", lambda: ops.FlatMapValues(fn), name, value_changes=True
        )

    def peek(self, fn: ops.KeyValueFn, *, name: str | None = None) -> KStream:
        """Call `fn(key, value)` for its side effect and pass the record on."""
        return self._then("KSTREAM-PEEK", lambda: ops.Peek(fn), name)

    def foreach(self, fn: ops.KeyValueFn, *, name: str | None = None) -> None:
        """Call `fn(key, value)` for every record; the end of this branch."""
        self._then("KSTREAM-FOREACH", lambda: ops.Peek(fn), name)

    def merge(self, other: KStream, *, name: str | None = None) -> KStream:
        """Both streams' records, in the order the task processes them."""
        node = self.app.graph.add(
            "KSTREAM-MERGE", ops.PassThrough, (self.node, other.node), name=name
        )
        same_keys = self.key_serde is other.key_serde
        same_values = self.value_serde is other.value_serde
        return KStream(
            self.app,
            node,
            self.key_serde if same_keys else None,
            self.value_serde if same_values else None,
            rekeyed=self.rekeyed or other.rekeyed,
        )

    def split(self, *, prefix: str = "") -> BranchedKStream:
        """Route each record to the first branch whose predicate holds (Kafka's split())."""
        return BranchedKStream(self, prefix)

    def process(
        self,
        processor: Callable[[], Processor],
        *,
        stores: Iterable[Table] = (),
        name: str | None = None,
    ) -> KStream:
        """Add a Processor API node (`processor` makes one per task); returns what it forwards."""
        for table in stores:
            if self.app.tables.get(table.name) is not table:
                raise ConfigError(
                    f"store {table.name!r} was not declared with this app's app.table()"
                )
        return self._then(
            "KSTREAM-PROCESSOR",
            processor,
            name,
            key_changes=True,
            value_changes=True,
            stores=stores,
        )

    # Sinks and repartitioning --------------------------------------------------------

    def to(self, topic: Topic | ops.TopicChooser, *, name: str | None = None) -> None:
        """Write to a topic, or to the topic `topic(key, value, record)` names per record."""
        if isinstance(topic, Topic):
            self.app.check_declared(topic)
        node = self.app.graph.add(
            "KSTREAM-SINK",
            lambda: ops.Sink(topic, self.app.topics),
            (self.node,),
            name=name,
            kind=NodeKind.SINK,
            topics=(topic,) if isinstance(topic, Topic) else (),
        )
        del node

    def through(self, topic: Topic, *, name: str | None = None) -> KStream:
        """Write to a declared topic and read it back: a repartition on a topic you own."""
        self.to(topic, name=name)
        return self.app.stream(topic)

    def repartition(
        self,
        *,
        name: str | None = None,
        partitions: int | None = None,
        key_type: Any = None,
        value_type: Any = None,
    ) -> KStream:
        """Through an internal topic `{app_id}-{name}-repartition`, partitioned by the key."""
        return self._repartitioned(name, partitions, key_type, value_type)

    def _repartitioned(
        self,
        name: str | None,
        partitions: int | None = None,
        key_type: Any = None,
        value_type: Any = None,
    ) -> KStream:
        graph = self.app.graph
        base = name or graph.name("KSTREAM-REPARTITION", None)
        key_serde = internal_serde(key_type, self.key_serde)
        value_serde = internal_serde(value_type, self.value_serde)
        topic = self.app.repartition_topic(base, key_serde, value_serde, partitions)
        graph.add(
            "KSTREAM-SINK",
            lambda: ops.Sink(topic, {}),
            (self.node,),
            name=f"{base}-repartition-sink",
            kind=NodeKind.SINK,
            topics=(topic,),
        )
        source = graph.add(
            "KSTREAM-SOURCE",
            ops.PassThrough,
            (),
            name=f"{base}-repartition-source",
            kind=NodeKind.SOURCE,
            topics=(topic,),
            # Only sources carry the stream's policy: the repartitioned side keeps it.
            on_error=next(
                (s.on_error for s in graph.upstream_sources(self.node)), self.node.on_error
            ),
        )
        return KStream(self.app, source, key_serde, value_serde)

    def keyed_for_grouping(self, name: str | None) -> KStream:
        """This stream, repartitioned first if its key may have changed."""
        return self._repartitioned(name) if self.rekeyed else self

    # To a table ----------------------------------------------------------------------

    def to_table(
        self, *, name: str | None = None, key_type: Any = None, value_type: Any = None
    ) -> KTable:
        """The latest value per key of this stream (Kafka's toTable, KIP-523); a None
        value deletes the key, a None key is dropped (counted).

        The table's store (`name`, Kafka's `Materialized.as`) has a changelog of its
        own, as an aggregation's has: the stream's topic is no table's changelog. A
        stream whose key may have changed goes through `{app_id}-{name}-repartition`
        first, so that each key's updates meet in one task."""
        from .aggregate import TableSource
        from .ktable import KTable, timestamped_table
        from .old_values import SourceOldValues

        graph = self.app.graph
        node_name = graph.name("KSTREAM-TOTABLE", None)
        store = name or graph.name("KSTREAM-TOTABLE-STATE-STORE", None)
        stream = self
        if self.rekeyed:
            stream = self._repartitioned(name or node_name, None, key_type, value_type)
        key_serde = internal_serde(key_type, stream.key_serde)
        value_serde = internal_serde(value_type, stream.value_serde)
        table = timestamped_table(self.app, store, key_serde, value_serde)
        node = graph.add(
            "KSTREAM-TOTABLE",
            lambda: TableSource(table),
            (stream.node,),
            name=node_name,
            stores=(table,),
        )
        # Named, it is materialized as `app.ktable(topic, name=...)` is (old_values.py).
        old_values = SourceOldValues(materialized=name is not None)
        return KTable(self.app, node, key_serde, value_serde, table.get, old_values)

    # Grouping ----------------------------------------------------------------------

    def group_by_key(
        self, *, name: str | None = None, key_type: Any = None, value_type: Any = None
    ) -> KGroupedStream:
        """Group by the current key (repartitioning first if an operator changed it)."""
        stream = self
        if self.rekeyed:
            stream = self._repartitioned(name, None, key_type, value_type)
        return KGroupedStream(stream, name)

    def group_by(
        self,
        selector: ops.KeyValueFn,
        *,
        name: str | None = None,
        key_type: Any = None,
        value_type: Any = None,
    ) -> KGroupedStream:
        """Group by `selector(key, value)`: always through a repartition topic."""
        rekeyed = self.select_key(selector)
        return KGroupedStream(rekeyed._repartitioned(name, None, key_type, value_type), name)

    # Joins (implemented in joins.py) -------------------------------------------------

    def join(
        self,
        other: KStream | KTable | GlobalKTable,
        joiner: Callable[[Any, Any], Any],
        *,
        window: JoinWindows | None = None,
        key_selector: Callable[[Any, Any], Any] | None = None,
        grace: Duration | None = None,
        name: str | None = None,
    ) -> KStream:
        """Inner join, `joiner(value, other_value)`: with a KStream within `window`, with a
        KTable as of each record's arrival (a versioned one as of each record's
        timestamp, after `grace` if given), or with a GlobalKTable at
        `key_selector(key, value)`; see docs/dsl.md for each kind."""
        from .joins import stream_join

        return stream_join(
            self,
            other,
            joiner,
            "inner",
            window=window,
            key_selector=key_selector,
            grace=grace,
            name=name,
        )

    def left_join(
        self,
        other: KStream | KTable | GlobalKTable,
        joiner: Callable[[Any, Any], Any],
        *,
        window: JoinWindows | None = None,
        key_selector: Callable[[Any, Any], Any] | None = None,
        grace: Duration | None = None,
        name: str | None = None,
    ) -> KStream:
        """Every record of this stream; `other_value` is None where nothing joins."""
        from .joins import stream_join

        return stream_join(
            self,
            other,
            joiner,
            "left",
            window=window,
            key_selector=key_selector,
            grace=grace,
            name=name,
        )

    def outer_join(
        self,
        other: KStream,
        joiner: Callable[[Any, Any], Any],
        *,
        window: JoinWindows,
        name: str | None = None,
    ) -> KStream:
        """Stream-stream only, as in Kafka Streams: unmatched records of either side."""
        from .joins import stream_join

        return stream_join(self, other, joiner, "outer", window=window, name=name)


class BranchedKStream:
    """`stream.split().branch(pred, name=...).default_branch()` -> {name: KStream}.

    A branch is named `prefix + name`, or by its position (1, 2, ...; the default
    branch 0), as Kafka's BranchedKStream names them. `chain=fn` (Kafka's
    Branched.withFunction / withConsumer) gives the branch to `fn`, and the map
    holds what it returns instead: a function that returns None (one that ends in
    `.to(...)`) leaves the branch out of the map.
    """

    def __init__(self, stream: KStream, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix
        self._routes: list[tuple[ops.KeyValueFn | None, str]] = []
        self._branches: dict[str, KStream] = {}
        self._names: set[str] = set()
        routes = self._routes
        self._node = stream.app.graph.add(
            "KSTREAM-BRANCH", lambda: ops.Branch(routes), (stream.node,)
        )

    def branch(
        self,
        predicate: ops.KeyValueFn,
        *,
        name: str | None = None,
        chain: Callable[[KStream], KStream | None] | None = None,
    ) -> BranchedKStream:
        self._add(predicate, name, chain, len(self._routes) + 1)
        return self

    def default_branch(
        self,
        *,
        name: str | None = None,
        chain: Callable[[KStream], KStream | None] | None = None,
    ) -> dict[str, KStream]:
        """Everything no predicate took; returns the branches by name."""
        self._add(None, name, chain, 0)
        return dict(self._branches)

    def no_default_branch(self) -> dict[str, KStream]:
        """Records no predicate took go nowhere (as in Kafka Streams); returns the branches."""
        return dict(self._branches)

    def _add(
        self,
        predicate: ops.KeyValueFn | None,
        name: str | None,
        chain: Callable[[KStream], KStream | None] | None,
        position: int,
    ) -> None:
        label = f"{self._prefix}{name if name is not None else position}"
        if label in self._names:
            raise ConfigError(f"split() has two branches named {label!r}")
        self._names.add(label)
        stream = self._stream
        node = stream.app.graph.add(
            "KSTREAM-BRANCHCHILD", ops.PassThrough, (self._node,), name=None
        )
        self._routes.append((predicate, node.name))
        branch = KStream(
            stream.app, node, stream.key_serde, stream.value_serde, rekeyed=stream.rekeyed
        )
        result = branch if chain is None else chain(branch)
        if result is not None:
            self._branches[label] = result


class KGroupedStream:
    """Records grouped by key, each group in one task: aggregate them into a table."""

    def __init__(self, stream: KStream, name: str | None) -> None:
        self.stream = stream
        self._name = name

    def _table(self, name: str | None, prefix: str, value_serde: Serde[Any]) -> Table:
        app = self.stream.app
        from .ktable import timestamped_table

        store = name or app.graph.name(f"{prefix}-STATE-STORE", None)
        return timestamped_table(
            app, store, internal_serde(None, self.stream.key_serde), value_serde
        )

    def aggregate(
        self,
        initializer: Initializer,
        aggregator: Aggregator,
        *,
        name: str | None = None,
        value_type: Any = None,
    ) -> KTable:
        """`aggregator(key, value, aggregate) -> aggregate`, starting from `initializer()`."""
        table = self._table(name, "KSTREAM-AGGREGATE", internal_serde(value_type, None))
        return self._fold(table, initializer, aggregator, "KSTREAM-AGGREGATE")

    def reduce(
        self,
        reducer: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        value_type: Any = None,
    ) -> KTable:
        """`reducer(aggregate, value) -> aggregate`; a key's first value is its start."""
        serde = internal_serde(value_type, self.stream.value_serde)
        table = self._table(name, "KSTREAM-REDUCE", serde)
        initializer, adder = reducer_as_aggregator(reducer)
        return self._fold(table, initializer, adder, "KSTREAM-REDUCE")

    def count(self, *, name: str | None = None) -> KTable:
        table = self._table(name, "KSTREAM-AGGREGATE", serde_for(int))
        return self._fold(table, int, lambda _k, _v, n: n + 1, "KSTREAM-AGGREGATE")

    def _fold(
        self, table: Table, initializer: Initializer, adder: Aggregator, prefix: str
    ) -> KTable:
        from .ktable import KTable

        stream = self.stream
        node = stream.app.graph.add(
            prefix,
            lambda: StreamAggregate(table, initializer, adder),
            (stream.node,),
            stores=(table,),
        )
        value_serde = table.value_serde.inner  # type: ignore[attr-defined]
        return KTable(stream.app, node, stream.key_serde, value_serde, table.get)

    # Windows (implemented in windowed.py) --------------------------------------------

    def windowed_by(
        self, windows: TimeWindows | SlidingWindows | SessionWindows
    ) -> TimeWindowedKStream | SessionWindowedKStream:
        """Aggregate per window of event time: tumbling, hopping, sliding or session."""
        from .windowed import windowed_stream

        return windowed_stream(self, windows)
