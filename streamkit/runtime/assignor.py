"""The task-aware, sticky, balanced assignor behind the consumer group.

Kafka assigns partitions; streamkit needs tasks to stay whole (partition p of every
source topic of a sub-topology on the worker that runs task `<sub>_p`), to stay
where they are across rebalances (their state is there), and to spread evenly,
each sub-topology on its own. Each member's join metadata carries the tasks it
runs, its standby tasks, the changelog offsets its local stores reflect (and the
lag of its standbys), its rack and its state directory. The group leader plans
with `runtime/placement.py` (active tasks, warm-ups, standbys), logs why tasks
moved, and hands out the partitions of each active task. Members that serve
queries also send their `host:port`; the leader hands every member the map of
endpoints to the tasks they run (Kafka Streams' `application.server` and
`partitionsByHost`), so any worker can forward a query to a key's owner. The
transport adapts `TaskPlanner` to its client's assignor hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..topology import TaskId, Topology
from ..transport.base import TopicPartition
from .placement import balance_tasks, explain_moves, hold_for_warmups, place_standbys

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
    # Readable name for logs ("host:pid"), and where its state lives ("host:/dir"):
    # members that share a state directory share their stores' files.
    name: str | None = None
    state_dir: str | None = None
    # Per standby, and per task still restoring: how many changelog records it was
    # behind at its last look.
    lags: Mapping[TaskId, int] = field(default_factory=dict)
    # In an assignment: the standbys that are warm-ups, placed for a task to move here.
    warmup: frozenset[TaskId] = frozenset()


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
    if info.name is not None:
        raw["name"] = info.name
    if info.state_dir is not None:
        raw["state_dir"] = info.state_dir
    if info.lags:
        raw["lags"] = {str(t): lag for t, lag in sorted(info.lags.items())}
    if info.warmup:
        raw["warmup"] = sorted(str(t) for t in info.warmup)
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
            name=raw.get("name"),
            state_dir=raw.get("state_dir"),
            lags={_task(n): int(lag) for n, lag in raw.get("lags", {}).items()},
            warmup=frozenset(_task(n) for n in raw.get("warmup", ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("ignoring unreadable assignment metadata %r", data[:100])
        return MemberInfo()


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
        max_warmup_replicas: int = 2,
    ) -> None:
        self._topology = topology
        self._local_info = local_info
        self._standby_replicas = standby_replicas
        self._acceptable_lag = acceptable_recovery_lag
        self._max_warmups = max_warmup_replicas
        self.last_moves = 0
        self.assigned = MemberInfo()

    def member_metadata(self) -> bytes:
        return encode_member(self._local_info())

    def assign(self, members: Mapping[str, bytes]) -> dict[str, tuple[set[TopicPartition], bytes]]:
        info = {m: decode_member(data) for m, data in members.items()}
        previous = {m: set(i.active) for m, i in info.items()}
        tasks = self._topology.task_ids()
        stateful_subs = {s.id for s in self._topology.subtopologies if s.tables}
        stateful = [t for t in tasks if t.subtopology in stateful_subs]
        # The changelog's end, as far as anyone knows: the most advanced copy, or a
        # copy plus the lag its member saw (a standby, a task still restoring).
        best: dict[TaskId, int] = {}
        for i in info.values():
            for task, offset in i.offsets.items():
                best[task] = max(best.get(task, 0), offset + i.lags.get(task, 0))

        def lag(task: TaskId, member: str) -> float:
            if task not in best:
                return 0.0  # stateless, or no one has state: all are equal
            reported = info[member].lags.get(task)
            if reported is not None:
                return reported  # its own look at the changelog's end
            return best[task] - info[member].offsets.get(task, -1)

        def cost(task: TaskId, member: str) -> float:
            # Caught-up members first (Kafka Streams' acceptable.recovery.lag), then
            # the least behind.
            behind = lag(task, member)
            return behind if behind <= self._acceptable_lag else 1e18 + behind

        # 1. Active tasks, every sub-topology spread; 2. warm-ups; 3. standbys.
        plan = balance_tasks(tasks, previous, cost, stateful_subs)
        warmups, holds = hold_for_warmups(
            plan,
            previous,
            stateful,
            lag,
            self._acceptable_lag,
            self._max_warmups,
            {m: i.standby for m, i in info.items()},
        )
        standbys = place_standbys(
            plan,
            stateful,
            self._standby_replicas,
            {m: i.rack for m, i in info.items()},
            lambda task, member: task in info[member].offsets,
            {m: i.state_dir for m, i in info.items()},
        )
        self.last_moves = sum(len(plan[m] - previous[m]) for m in plan)
        log.info(
            "assigned %d tasks to %d workers (%d standbys); %d tasks moved",
            len(tasks),
            len(members),
            sum(len(s) for s in standbys.values()),
            self.last_moves,
        )
        warmed = {m: i.standby for m, i in info.items()}
        for line in explain_moves(previous, plan, holds, warmed, lambda m: info[m].name or m):
            log.info("%s", line)
        # Warm-ups run as standbys (a member that does not know the difference still
        # warms them), and serve standby queries like them.
        copies = {m: standbys[m] | warmups[m] for m in plan}
        hosts = _endpoints(info, plan)
        standby_hosts = _endpoints(info, copies)
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
                        standby=frozenset(copies[member]),
                        warmup=frozenset(warmups[member]),
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
