"""The Topology: agents compiled into source, processor and sink nodes.

Agents that share a source topic or a table form one sub-topology (a connected
component);
a sub-topology has one task per partition of its widest source topic, and task p
reads partition p of every source topic (DESIGN.md: Task). Topics that link a
sink of one sub-topology to a source of another do not join them: records cross
through the broker, as in Kafka Streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .agent import Agent
from .errors import TopologyError
from .state.table import Table
from .topic import Topic
from .transport.base import TopicPartition


class TaskId(NamedTuple):
    subtopology: int
    partition: int

    def __str__(self) -> str:
        return f"{self.subtopology}_{self.partition}"


@dataclass(frozen=True)
class SubTopology:
    id: int
    sources: tuple[Topic, ...]
    agents: tuple[Agent, ...]

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(dict.fromkeys(t for a in self.agents for t in a.tables))

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
    def __init__(self, subtopologies: Sequence[SubTopology]) -> None:
        self.subtopologies = tuple(subtopologies)
        self._by_topic = {t.name: s for s in self.subtopologies for t in s.sources}
        for sub in self.subtopologies:
            for table in sub.tables:
                _size_changelog(table, sub)

    def changelog_topics(self) -> list[Topic]:
        return [t.changelog for s in self.subtopologies for t in s.tables]

    @classmethod
    def build(cls, agents: Iterable[Agent]) -> Topology:
        declared = list(agents)
        index = {id(a): i for i, a in enumerate(declared)}
        groups: list[tuple[dict[str, Topic], list[Agent]]] = []
        for agent in declared:
            names = {t.name for t in agent.sources}
            tables = {t.name for t in agent.tables}
            touching = [
                g
                for g in groups
                if names & g[0].keys() or tables & {t.name for a in g[1] for t in a.tables}
            ]
            merged_topics: dict[str, Topic] = {t.name: t for t in agent.sources}
            merged_agents: list[Agent] = []
            for g in touching:
                merged_topics.update(g[0])
                merged_agents.extend(g[1])
                groups.remove(g)
            merged_agents.append(agent)
            groups.append((merged_topics, merged_agents))
        # Number sub-topologies in declaration order, as users read their code.
        groups.sort(key=lambda g: min(index[id(a)] for a in g[1]))
        return cls(
            [
                SubTopology(
                    i, tuple(topics.values()), tuple(sorted(group, key=lambda a: index[id(a)]))
                )
                for i, (topics, group) in enumerate(groups)
            ]
        )

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
            source_names = [f"source-{t.name}" for t in sub.sources]
            for topic in sub.sources:
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
                    n for n, t in zip(source_names, sub.sources, strict=True) if t in agent.sources
                ]
                lines.append(f"      <-- {', '.join(parents)}")
            for agent in sub.agents:
                for topic in agent.sinks:
                    lines.append(f"    Sink: sink-{topic.name} (topic: {topic.name})")
                    lines.append(f"      <-- {agent.name}")
            lines.append("")
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
