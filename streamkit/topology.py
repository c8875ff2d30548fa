"""The Topology: agents compiled into source, processor and sink nodes.

Agents that share a source topic or a table form one sub-topology (a connected
component);
a sub-topology has one task per partition of its widest source topic, and task p
reads partition p of every source topic (DESIGN.md: Task). Topics that link a
sink of one sub-topology to a source of another do not join them: records cross
through the broker, as in Kafka Streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .agent import Agent
from .dsl.global_table import GlobalKTable
from .dsl.graph import CopartitionGroup, GraphBuilder, NodeKind, NodeSpec, ProcessorGraph
from .errors import TopologyError
from .state.table import Table
from .topic import Topic
from .transport.base import TopicPartition


class TaskId(NamedTuple):
    subtopology: int
    partition: int

    def __str__(self) -> str:
        return f"{self.subtopology}_{self.partition}"


Member = Agent | ProcessorGraph


@dataclass(frozen=True)
class SubTopology:
    id: int
    sources: tuple[Topic, ...]
    agents: tuple[Agent, ...]
    graphs: tuple[ProcessorGraph, ...] = ()

    @property
    def tables(self) -> tuple[Table, ...]:
        members: tuple[Member, ...] = (*self.agents, *self.graphs)
        return tuple(dict.fromkeys(t for m in members for t in m.tables))

    @property
    def task_count(self) -> int:
        return max(t.partitions for t in self.sources)

    def task_ids(self) -> list[TaskId]:
        return [TaskId(self.id, p) for p in range(self.task_count)]

    def partitions_of(self, task: TaskId) -> set[TopicPartition]:
        return {
            TopicPartition(t.name, task.partition)
            for t in self.sources
            if task.partition < t.partitions
        }


class Topology:
    def __init__(
        self,
        subtopologies: Sequence[SubTopology],
        repartition_topics: Sequence[Topic] = (),
        copartition_groups: Sequence[CopartitionGroup] = (),
        graph: GraphBuilder | None = None,
    ) -> None:
        self.subtopologies = tuple(subtopologies)
        # Read whole by every worker, outside the tasks; shown by describe().
        self.global_tables: tuple[GlobalKTable, ...] = ()
        self.repartition_topics = tuple(repartition_topics)
        self._by_topic = {t.name: s for s in self.subtopologies for t in s.sources}
        self._size_repartition_topics()
        if graph is not None:
            for group in copartition_groups:
                _check_copartitioned(group, graph, self.repartition_topics)
        for sub in self.subtopologies:
            for table in sub.tables:
                _size_changelog(table, sub)
                _route_table(table, sub)

    def changelog_topics(self) -> list[Topic]:
        """Changelogs to create: a KTable's source topic is its own, and exists already."""
        return [
            t.changelog for s in self.subtopologies for t in s.tables if not t.changelog_is_source
        ]

    def internal_topics(self) -> list[Topic]:
        """Topics the topology creates: changelogs and repartition topics, sized by it."""
        return [*self.changelog_topics(), *self.repartition_topics]

    def _size_repartition_topics(self) -> None:
        """A repartition topic gets as many partitions as the sub-topology writing it has
        tasks, in declaration order, so that a chain of them is sized upstream first."""
        for topic in self.repartition_topics:
            if topic.declared_partitions is not None:
                continue
            writers = [s for s in self.subtopologies for g in s.graphs if topic in g.sinks]
            topic.partitions = max((w.task_count for w in writers), default=1)

    @classmethod
    def build(
        cls,
        agents: Iterable[Agent],
        graph: GraphBuilder | None = None,
        global_tables: Sequence[GlobalKTable] = (),
    ) -> Topology:
        members: list[Member] = [*agents, *(graph.graphs() if graph is not None else ())]
        index = {id(m): i for i, m in enumerate(members)}
        groups: list[tuple[dict[str, Topic], list[Member]]] = []
        for member in members:
            names = {t.name for t in member.sources}
            tables = {t.name for t in member.tables}
            touching = [
                g
                for g in groups
                if names & g[0].keys() or tables & {t.name for m in g[1] for t in m.tables}
            ]
            merged_topics: dict[str, Topic] = {t.name: t for t in member.sources}
            merged: list[Member] = []
            for g in touching:
                merged_topics.update(g[0])
                merged.extend(g[1])
                groups.remove(g)
            merged.append(member)
            groups.append((merged_topics, merged))
        # Number sub-topologies in declaration order, as users read their code.
        groups.sort(key=lambda g: min(index[id(m)] for m in g[1]))
        subtopologies = []
        for i, (topics, group) in enumerate(groups):
            ordered = sorted(group, key=lambda m: index[id(m)])
            subtopologies.append(
                SubTopology(
                    i,
                    tuple(topics.values()),
                    tuple(m for m in ordered if isinstance(m, Agent)),
                    tuple(m for m in ordered if isinstance(m, ProcessorGraph)),
                )
            )
        if graph is None:
            return cls(subtopologies)
        topology = cls(
            subtopologies,
            list(graph.repartition_topics.values()),
            graph.copartition_groups,
            graph,
        )
        topology.global_tables = tuple(global_tables)
        return topology

    def source_topics(self) -> list[str]:
        return list(self._by_topic)

    def task_ids(self) -> list[TaskId]:
        return [tid for s in self.subtopologies for tid in s.task_ids()]

    def subtopology(self, task: TaskId) -> SubTopology:
        return self.subtopologies[task.subtopology]

    def task_id_for(self, tp: TopicPartition) -> TaskId:
        sub = self._by_topic.get(tp.topic)
        if sub is None:
            raise TopologyError(f"topic {tp.topic!r} is not a source of this topology")
        return TaskId(sub.id, tp.partition)

    def describe(self) -> str:
        """A readable graph in the spirit of Kafka Streams' `Topology.describe()`."""
        lines = ["Topologies:"]
        for sub in self.subtopologies:
            tasks = ", ".join(str(t) for t in sub.task_ids())
            lines.append(f"   Sub-topology: {sub.id} (tasks: {tasks})")
            agent_sources = [t for t in sub.sources if any(t in a.sources for a in sub.agents)]
            source_names = [f"source-{t.name}" for t in agent_sources]
            for topic in agent_sources:
                readers = [a.name for a in sub.agents if topic in a.sources]
                lines.append(
                    f"    Source: source-{topic.name} (topic: {topic.name}, "
                    f"partitions: {topic.partitions})"
                )
                lines.append(f"      --> {', '.join(readers)}")
            for agent in sub.agents:
                stores = ", ".join(t.name for t in agent.tables)
                lines.append(f"    Processor: {agent.name} (agent, stores: [{stores}])")
                sinks = [f"sink-{t.name}" for t in agent.sinks]
                lines.append(f"      --> {', '.join(sinks) or 'none'}")
                parents = [
                    n
                    for n, t in zip(source_names, agent_sources, strict=True)
                    if t in agent.sources
                ]
                lines.append(f"      <-- {', '.join(parents)}")
            for agent in sub.agents:
                for topic in agent.sinks:
                    lines.append(f"    Sink: sink-{topic.name} (topic: {topic.name})")
                    lines.append(f"      <-- {agent.name}")
            for graph in sub.graphs:
                for node in graph.nodes:
                    lines.extend(_describe_node(node))
            lines.append("")
        for table in self.global_tables:
            lines.append(
                f"   Global store: {table.name} (topic: {table.topic.name}, every partition "
                "on every worker; no tasks)"
            )
        return "\n".join(lines)


def _size_changelog(table: Table, sub: SubTopology) -> None:
    """A changelog has one partition per task of the sub-topology that owns the table."""
    changelog = table.changelog
    if changelog.declared_partitions is None:
        changelog.partitions = sub.task_count
    elif changelog.declared_partitions != sub.task_count:
        raise TopologyError(
            f"table {table.name!r} is declared with {changelog.declared_partitions} "
            f"partitions but sub-topology {sub.id} (topics "
            f"{', '.join(t.name for t in sub.sources)}) has {sub.task_count} tasks"
        )


def _route_table(table: Table, sub: SubTopology) -> None:
    """Tie a table to the source topics whose keys it holds, refusing those that
    cannot share it: task p reads partition p of each, so a key would reach
    different tasks from topics of different partition counts or partitioners.
    Counts the broker has not reported yet are checked once it has."""
    agents = [a for a in sub.agents if table in a.tables]
    members = agents or [g for g in sub.graphs if table in g.tables]
    topics = list(dict.fromkeys(t for m in members for t in m.sources))
    if not table.changelog_is_source and topics:
        table.partitioned_by = topics[0]
    if len(topics) < 2 or not agents:
        return  # the DSL's joins check their own inputs (co-partition groups)

    known = [t for t in topics if t.partitions_known]
    checks: list[tuple[bool, str, Callable[[Topic], str]]] = [
        (len({t.partitions for t in known}) > 1, "partition counts", _count),
        (len({t.partitioner for t in topics}) > 1, "partitioners", _partitioner),
    ]
    for differ, what, describe in checks:
        if not differ:
            continue
        readers = {t.name: ", ".join(a.name for a in agents if t in a.sources) for t in topics}
        listed = ", ".join(f"{t.name} ({describe(t)}, read by {readers[t.name]})" for t in topics)
        raise TopologyError(
            f"table {table.name!r} is shared across topics of different {what}: {listed}. "
            "Task p reads partition p of each, so one key would reach different tasks. Give "
            "the topics one partition count and declare the partitioner their producers "
            "use (app.topic(..., partitioner=...)), or re-key one stream into a topic like "
            "the other's (yield it to that topic) and read that one"
        )


def _count(topic: Topic) -> str:
    return f"{topic.partitions} partitions"


def _partitioner(topic: Topic) -> str:
    return f"partitioner {topic.partitioner.name}"


def _describe_node(node: NodeSpec) -> list[str]:
    """Kafka Streams' describe() lines for one DSL or Processor API node."""
    topics = ", ".join(t.name for t in node.topics)
    if node.kind is NodeKind.SOURCE:
        lines = [f"    Source: {node.name} (topics: [{topics}])"]
    elif node.kind is NodeKind.SINK:
        lines = [f"    Sink: {node.name} (topic: {topics or 'chosen per record'})"]
    else:
        stores = ", ".join(t.name for t in node.stores)
        lines = [f"    Processor: {node.name} (stores: [{stores}])"]
    if node.children:
        lines.append(f"      --> {', '.join(c.name for c in node.children)}")
    if node.parents:
        lines.append(f"      <-- {', '.join(p.name for p in node.parents)}")
    return lines


def _check_copartitioned(
    group: CopartitionGroup, graph: GraphBuilder, repartition_topics: Sequence[Topic]
) -> None:
    """Both sides of a join must read topics of one partition count (seed 001, DESIGN.md
    invariant 5). Repartition topics not sized by the user follow the others."""
    topics: dict[str, Topic] = {}
    for side in group.sides:
        for source in graph.upstream_sources(side):
            topics.update((t.name, t) for t in source.topics)
    internal = {t.name for t in repartition_topics if t.declared_partitions is None}
    # Internal topics follow the user's; when every side is internal, the widest.
    fixed = [t for t in topics.values() if t.name not in internal] or list(topics.values())
    # Counts the broker has not reported yet (partitions=None) are checked once it has.
    known = [t for t in fixed if t.partitions_known or t.name in internal]
    if known:
        target = max(t.partitions for t in known)
        for t in topics.values():
            if t.name in internal:
                t.partitions = target
                t.partitioner = known[0].partitioner
    counts = {
        t.name: t.partitions for t in topics.values() if t.partitions_known or t.name in internal
    }
    partitioners = {t.name: t.partitioner.name for t in topics.values()}
    mismatches = [
        (
            counts,
            " has ",
            " partitions",
            "Repartition one side to the other's count (stream.repartition(partitions=N))",
        ),
        (
            partitioners,
            " uses ",
            "",
            "Declare the partitioner each topic's producers "
            "really use (app.topic(..., partitioner=...)); if they differ, repartition one "
            "side (stream.repartition())",
        ),
    ]
    for found, verb, unit, way in mismatches:
        if len(set(found.values())) > 1:
            listed = ", ".join(f"{name}{verb}{n}" for name, n in found.items())
            raise TopologyError(
                f"{group.what} needs co-partitioned inputs (the same number of partitions "
                f"and the same partitioner), but {listed}{unit}. {way}, or join a GlobalKTable"
            )
