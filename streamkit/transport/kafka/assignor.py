"""aiokafka's assignor hook around the runtime's task planner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from ..base import AssignmentPlanner


class _PlannerAssignor(AbstractPartitionAssignor):
    """aiokafka's assignor hook around a transport-neutral AssignmentPlanner."""

    name = "streamkit-tasks"
    version = 1

    def __init__(self, planner: AssignmentPlanner) -> None:
        self._planner = planner

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), self._planner.member_metadata()
        )

    def assign(  # type: ignore[override]
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        plan = self._planner.assign({m: meta.user_data for m, meta in members.items()})
        assignments = {}
        for member, (partitions, data) in plan.items():
            by_topic: dict[str, list[int]] = {}
            for tp in partitions:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            assignments[member] = ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in by_topic.items()), data
            )
        return assignments

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        self._planner.on_assignment(assignment.user_data)
