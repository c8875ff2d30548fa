"""The task-aware, sticky, balanced assignor behind the consumer group.

Kafka assigns partitions; streamkit needs tasks to stay whole (partition p of every
source topic of a sub-topology on the worker that runs task `<sub>_p`), to stay
where they are across rebalances (their state is there), and to spread evenly.
Each member's join metadata carries the tasks it owns; the group leader plans with
`balance_tasks` and hands out the partitions of each task. The transport adapts
`TaskPlanner` to its client's assignor hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..topology import TaskId, Topology
from ..transport.base import TopicPartition

log = logging.getLogger("streamkit.assignor")


def balance_tasks(
    tasks: Sequence[TaskId], previous: Mapping[str, set[TaskId]]
) -> dict[str, set[TaskId]]:
    """Every task to one member; counts differ by at most one; as few moves as that allows.

    `previous` maps each member of the new generation to the tasks it owned.
    """
    members = sorted(previous)
    if not members:
        return {}
    base, extra = divmod(len(tasks), len(members))
    valid = set(tasks)
    plan: dict[str, list[TaskId]] = {m: [] for m in members}
    taken: set[TaskId] = set()
    # Keep what each member had, up to the most any member may hold; members that
    # held more choose first, so the extra slots go where they save moves.
    for member in sorted(members, key=lambda m: (-len(previous[m] & valid), m)):
        for task in sorted(previous[member] & valid):
            if len(plan[member]) > base or task in taken:
                continue
            plan[member].append(task)
            taken.add(task)
    # Only `extra` members may hold base + 1.
    holders = [m for m in members if len(plan[m]) > base]
    for member in holders[extra:]:
        taken.discard(plan[member].pop())
    extra_left = extra - min(len(holders), extra)
    for task in (t for t in tasks if t not in taken):
        under = [m for m in members if len(plan[m]) < base]
        if under:
            target = min(under, key=lambda m: (len(plan[m]), m))
        else:
            assert extra_left > 0
            target = min(m for m in members if len(plan[m]) == base)
            extra_left -= 1
        plan[target].append(task)
    return {m: set(ts) for m, ts in plan.items()}


def encode_tasks(tasks: Iterable[TaskId]) -> bytes:
    return json.dumps({"version": 1, "active": sorted(str(t) for t in tasks)}).encode()


def decode_tasks(user_data: bytes | None) -> set[TaskId]:
    """Tasks named in a member's metadata; unreadable metadata counts as none."""
    if not user_data:
        return set()
    try:
        names = json.loads(user_data)["active"]
        return {TaskId(*(int(part) for part in name.split("_"))) for name in names}
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable assignment metadata %r", user_data[:100])
        return set()


class TaskPlanner:
    """The group leader's plan: tasks to members, then each task's partitions.

    Every worker of an app builds the same topology, so whichever is leader plans
    the same way. The transport carries `member_metadata()` in each member's join
    request and calls `assign()` on the leader.
    """

    name = "streamkit-tasks"

    def __init__(self, topology: Topology, owned_tasks: Callable[[], Iterable[TaskId]]) -> None:
        self._topology = topology
        self._owned_tasks = owned_tasks
        self.last_moves = 0

    def member_metadata(self) -> bytes:
        return encode_tasks(self._owned_tasks())

    def assign(self, members: Mapping[str, bytes]) -> dict[str, tuple[set[TopicPartition], bytes]]:
        previous = {m: decode_tasks(data) for m, data in members.items()}
        tasks = self._topology.task_ids()
        plan = balance_tasks(tasks, previous)
        self.last_moves = sum(len(plan[m] - previous[m]) for m in plan)
        log.info(
            "assigned %d tasks to %d workers; %d tasks moved",
            len(tasks),
            len(members),
            self.last_moves,
        )
        return {
            member: (
                {
                    tp
                    for task in owned
                    for tp in self._topology.subtopology(task).partitions_of(task)
                },
                encode_tasks(owned),
            )
            for member, owned in plan.items()
        }
