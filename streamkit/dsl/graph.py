"""The declared processor graph of an app's DSL and Processor API nodes.

DSL calls append node specs here; `ProcessorGraph`s are its connected components,
which the Topology groups with agents into sub-topologies (shared source topics
or stores join them, repartition topics do not). A spec only describes a node;
each task instantiates its own processors from the specs' factories.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import ConfigError
from ..processor import Processor, ProcessorFactory, Record
from ..state.table import Table
from ..topic import ErrorPolicy, Topic
from .operators import PassThrough


class NodeKind(StrEnum):
    SOURCE = "Source"
    PROCESSOR = "Processor"
    SINK = "Sink"


@dataclass(eq=False)
class NodeSpec:
    name: str
    kind: NodeKind
    factory: ProcessorFactory
    parents: list[NodeSpec] = field(default_factory=list)
    children: list[NodeSpec] = field(default_factory=list)
    stores: tuple[Table, ...] = ()
    # A source's topics; a sink's topic when it is fixed.
    topics: tuple[Topic, ...] = ()
    on_error: ErrorPolicy = ErrorPolicy.FAIL
    # A source's event time, when the record timestamp is not it.
    timestamp_extractor: Callable[[Record], int] | None = None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


@dataclass(eq=False)
class CopartitionGroup:
    """Nodes whose inputs must be co-partitioned (a join's two sides), checked at start-up."""

    what: str  # e.g. "join JOIN-0000000007"
    sides: tuple[NodeSpec, ...]


@dataclass(eq=False)
class ProcessorGraph:
    """A connected component of DSL and Processor API nodes: runs as one unit per task."""

    nodes: tuple[NodeSpec, ...]

    @property
    def name(self) -> str:
        return self.nodes[0].name

    @property
    def sources(self) -> tuple[Topic, ...]:
        return tuple(
            dict.fromkeys(t for n in self.nodes if n.kind is NodeKind.SOURCE for t in n.topics)
        )

    @property
    def sinks(self) -> tuple[Topic, ...]:
        return tuple(
            dict.fromkeys(t for n in self.nodes if n.kind is NodeKind.SINK for t in n.topics)
        )

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(dict.fromkeys(s for n in self.nodes for s in n.stores))

    @property
    def on_error(self) -> ErrorPolicy:
        return next((n.on_error for n in self.nodes if n.kind is NodeKind.SOURCE), ErrorPolicy.FAIL)


class GraphBuilder:
    """Collects node specs in declaration order and names them as Kafka Streams does."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.nodes: list[NodeSpec] = []
        self._names: set[str] = set()
        self.copartition_groups: list[CopartitionGroup] = []
        self._sources: dict[str, NodeSpec] = {}
        self.repartition_topics: dict[str, Topic] = {}

    def name(self, prefix: str, given: str | None) -> str:
        if given is not None:
            if given in self._names:
                raise ConfigError(f"two processor nodes are named {given!r}")
            return given
        return f"{prefix}-{len(self.nodes):010d}"

    def add(
        self,
        prefix: str,
        factory: Callable[[], Processor],
        parents: Iterable[NodeSpec],
        *,
        name: str | None = None,
        kind: NodeKind = NodeKind.PROCESSOR,
        stores: Iterable[Table] = (),
        topics: Iterable[Topic] = (),
        on_error: ErrorPolicy = ErrorPolicy.FAIL,
    ) -> NodeSpec:
        node = NodeSpec(
            self.name(prefix, name),
            kind,
            factory,
            stores=tuple(stores),
            topics=tuple(topics),
            on_error=on_error,
        )
        for parent in parents:
            node.parents.append(parent)
            parent.children.append(node)
        self._names.add(node.name)
        self.nodes.append(node)
        return node

    def source(
        self,
        topic: Topic,
        on_error: ErrorPolicy,
        timestamp_extractor: Callable[[Record], int] | None,
    ) -> NodeSpec:
        """One source node per topic: streaming a topic twice shares its source."""
        known = self._sources.get(topic.name)
        if known is not None:
            return known
        node = self.add(
            "KSTREAM-SOURCE",
            PassThrough,
            (),
            kind=NodeKind.SOURCE,
            topics=(topic,),
            on_error=on_error,
        )
        node.timestamp_extractor = timestamp_extractor
        self._sources[topic.name] = node
        return node

    def source_for(self, topic: Topic) -> NodeSpec | None:
        return self._sources.get(topic.name)

    def graphs(self) -> list[ProcessorGraph]:
        """Connected components, each in declaration order.

        Nodes that share a store are connected too (as in Kafka Streams' grouping
        into sub-topologies): a stream-table join and its table's source must see
        the task's records in one timestamp order, so they run as one unit.
        """
        order = {id(n): i for i, n in enumerate(self.nodes)}
        by_store: dict[int, list[NodeSpec]] = {}
        for node in self.nodes:
            for store in node.stores:
                by_store.setdefault(id(store), []).append(node)
        seen: set[int] = set()
        components = []
        for start in self.nodes:
            if id(start) in seen:
                continue
            component, pending = [], [start]
            seen.add(id(start))
            while pending:
                node = pending.pop()
                component.append(node)
                sharing = [n for st in node.stores for n in by_store[id(st)]]
                for other in (*node.parents, *node.children, *sharing):
                    if id(other) not in seen:
                        seen.add(id(other))
                        pending.append(other)
            components.append(ProcessorGraph(tuple(sorted(component, key=lambda n: order[id(n)]))))
        return components

    def upstream_sources(self, node: NodeSpec) -> list[NodeSpec]:
        """The source nodes a node's records come from (within its component)."""
        found, pending, seen = [], [node], {id(node)}
        while pending:
            current = pending.pop()
            if current.kind is NodeKind.SOURCE:
                found.append(current)
            for parent in current.parents:
                if id(parent) not in seen:
                    seen.add(id(parent))
                    pending.append(parent)
        return found
