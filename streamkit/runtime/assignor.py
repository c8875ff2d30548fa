"""The task-aware, sticky, balanced assignor behind the consumer group.

Kafka assigns partitions; streamkit needs tasks to stay whole (partition p of every
source topic of a sub-topology on the worker that runs task `<sub>_p`), to stay
where they are across rebalances (their state is there), and to spread evenly.
Each member's join metadata carries the tasks it runs, its standby tasks, the
changelog offsets its local stores reflect, and its rack. The group leader plans
active tasks with `balance_tasks` (a task whose owner left goes to a caught-up
member where one has room), places standby replicas with `place_standbys` (never
with the active copy, on another rack where possible), and hands out the
partitions of each active task. Members that serve queries also send their
`host:port`; the leader hands every member the map of endpoints to the tasks
they run (Kafka Streams' `application.server` and `partitionsByHost`), so any
worker can forward a query to a key's owner. The transport adapts `TaskPlanner`
to its client's assignor hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..topology import TaskId, Topology
from ..transport.base import TopicPartition

log = logging.getLogger("streamkit.assignor")


@dataclass(frozen=True)
class MemberInfo:
    """What a member tells the leader when it joins."""

    active: frozenset[TaskId] = frozenset()
    standby: frozenset[TaskId] = frozenset()
    # Per task with local state: the sum of its stores' changelog checkpoints.
    offsets: Mapping[TaskId, int] = field(default_factory=dict)
    rack: str | None = None
    # `host:port` of the member's web server, if it runs one.
    endpoint: str | None = None
    # In an assignment: every member's endpoint -> its active (and standby) tasks.
    hosts: Mapping[str, frozenset[TaskId]] = field(default_factory=dict)
    standby_hosts: Mapping[str, frozenset[TaskId]] = field(default_factory=dict)


def _by_host(hosts: Mapping[str, frozenset[TaskId]]) -> dict[str, list[str]]:
    return {h: sorted(str(t) for t in ts) for h, ts in sorted(hosts.items())}


def encode_member(info: MemberInfo) -> bytes:
    """JSON; fields added since version 2 are optional, so members of either
    version read each other's metadata (unknown fields are ignored)."""
    raw: dict[str, object] = {
        "version": 2,
        "active": sorted(str(t) for t in info.active),
        "standby": sorted(str(t) for t in info.standby),
        "offsets": {str(t): o for t, o in sorted(info.offsets.items())},
        "rack": info.rack,
    }
    if info.endpoint is not None:
        raw["endpoint"] = info.endpoint
    if info.hosts:
        raw["hosts"] = _by_host(info.hosts)
        raw["standby_hosts"] = _by_host(info.standby_hosts)
    return json.dumps(raw).encode()


def _task(name: str) -> TaskId:
    sub, partition = name.split("_")
    return TaskId(int(sub), int(partition))


def decode_member(data: bytes | None) -> MemberInfo:
    """A member's metadata; unreadable metadata counts as a member with nothing."""
    if not data:
        return MemberInfo()
    try:
        raw = json.loads(data)
        return MemberInfo(
            active=frozenset(_task(n) for n in raw.get("active", ())),
            standby=frozenset(_task(n) for n in raw.get("standby", ())),
            offsets={_task(n): int(o) for n, o in raw.get("offsets", {}).items()},
            rack=raw.get("rack"),
            endpoint=raw.get("endpoint"),
            hosts={h: frozenset(map(_task, ts)) for h, ts in raw.get("hosts", {}).items()},
            standby_hosts={
                h: frozenset(map(_task, ts)) for h, ts in raw.get("standby_hosts", {}).items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("ignoring unreadable assignment metadata %r", data[:100])
        return MemberInfo()


def balance_tasks(
    tasks: Sequence[TaskId],
    previous: Mapping[str, set[TaskId]],
    preference: Callable[[TaskId, str], float] = lambda task, member: 0.0,
) -> dict[str, set[TaskId]]:
    """Every task to one member; counts differ by at most one; as few moves as that allows.

    `previous` maps each member of the new generation to the tasks it owned. A task
    that must move goes to the member with room and the lowest `preference` (its
    restore lag, say).
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
        room = [m for m in members if len(plan[m]) < base]
        if not room:
            assert extra_left > 0
            room = [m for m in members if len(plan[m]) == base]
            extra_left -= 1
        target = min(room, key=lambda m: (preference(task, m), len(plan[m]), m))
        plan[target].append(task)
    return {m: set(ts) for m, ts in plan.items()}


def place_standbys(
    active: Mapping[str, set[TaskId]],
    stateful: Sequence[TaskId],
    replicas: int,
    info: Mapping[str, MemberInfo],
) -> dict[str, set[TaskId]]:
    """`replicas` standbys per stateful task, never on its active member.

    Preferred, in order: another rack than the copies placed so far, a member that
    already has the task's state (sticky, little to catch up), the least loaded.
    """
    owner = {t: m for m, ts in active.items() for t in ts}
    standby: dict[str, set[TaskId]] = {m: set() for m in active}
    for _ in range(replicas):
        for task in stateful:
            copies = [owner[task], *(m for m, ts in standby.items() if task in ts)]
            racks = {info[m].rack for m in copies if info[m].rack is not None}
            candidates = [m for m in active if m not in copies]
            if not candidates:
                continue
            target = min(
                candidates,
                key=lambda m: (
                    info[m].rack is not None and info[m].rack in racks,
                    task not in info[m].offsets,
                    len(standby[m]) + len(active[m]),
                    m,
                ),
            )
            standby[target].add(task)
    return standby


class TaskPlanner:
    """The group leader's plan: tasks to members, then each task's partitions.

    Every worker of an app builds the same topology, so whichever is leader plans
    the same way. The transport carries `member_metadata()` in each member's join
    request, calls `assign()` on the leader and `on_assignment()` on every member.
    """

    name = "streamkit-tasks"

    def __init__(
        self,
        topology: Topology,
        local_info: Callable[[], MemberInfo],
        *,
        standby_replicas: int = 0,
        acceptable_recovery_lag: int = 10_000,
    ) -> None:
        self._topology = topology
        self._local_info = local_info
        self._standby_replicas = standby_replicas
        self._acceptable_lag = acceptable_recovery_lag
        self.last_moves = 0
        self.assigned = MemberInfo()

    def member_metadata(self) -> bytes:
        return encode_member(self._local_info())

    def assign(self, members: Mapping[str, bytes]) -> dict[str, tuple[set[TopicPartition], bytes]]:
        info = {m: decode_member(data) for m, data in members.items()}
        previous = {m: set(i.active) for m, i in info.items()}
        tasks = self._topology.task_ids()
        # The most advanced copy anyone reports stands for the changelog's end.
        best: dict[TaskId, int] = {}
        for i in info.values():
            for task, offset in i.offsets.items():
                best[task] = max(best.get(task, 0), offset)

        def restore_lag(task: TaskId, member: str) -> float:
            if task not in best:
                return 0.0  # stateless, or no one has state: all are equal
            lag = best[task] - info[member].offsets.get(task, -1)
            # Caught-up members first (Kafka Streams' acceptable.recovery.lag), then
            # the least behind.
            return lag if lag <= self._acceptable_lag else 1e18 + lag

        plan = balance_tasks(tasks, previous, restore_lag)
        stateful = [t for t in tasks if self._topology.subtopology(t).tables]
        standbys = place_standbys(plan, stateful, self._standby_replicas, info)
        self.last_moves = sum(len(plan[m] - previous[m]) for m in plan)
        log.info(
            "assigned %d tasks to %d workers (%d standbys); %d tasks moved",
            len(tasks),
            len(members),
            sum(len(s) for s in standbys.values()),
            self.last_moves,
        )
        hosts = _endpoints(info, plan)
        standby_hosts = _endpoints(info, standbys)
        return {
            member: (
                {
                    tp
                    for task in owned
                    for tp in self._topology.subtopology(task).partitions_of(task)
                },
                encode_member(
                    MemberInfo(
                        active=frozenset(owned),
                        standby=frozenset(standbys[member]),
                        hosts=hosts,
                        standby_hosts=standby_hosts,
                    )
                ),
            )
            for member, owned in plan.items()
        }

    def on_assignment(self, data: bytes) -> None:
        """This member's share of the plan; the coordinator reads the standbys from it."""
        self.assigned = decode_member(data)


def _endpoints(
    info: Mapping[str, MemberInfo], tasks: Mapping[str, set[TaskId]]
) -> dict[str, frozenset[TaskId]]:
    """Endpoint -> tasks, for the members that serve queries."""
    return {
        endpoint: frozenset(owned)
        for member, owned in tasks.items()
        if (endpoint := info[member].endpoint) is not None
    }
