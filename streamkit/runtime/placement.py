"""Where tasks go: the group leader's planning, as pure functions of what members report.

Kafka Streams' HighAvailabilityTaskAssignor (KIP-441) in spirit, in three passes:

1. `balance_tasks`: every active task to one member. Each sub-topology's tasks are
   spread on their own (per member, counts differ by at most one), stateful
   sub-topologies first, so stateful tasks and all tasks are balanced too; within
   that, a task stays where it was, and one that must move goes to the member that
   can take it most cheaply (the least restore lag).
2. `hold_for_warmups`: a stateful task planned onto a member that is not caught up
   stays with a caught-up member for now, and the planned member gets a warm-up
   copy (a standby placed for the move); a later rebalance, once it caught up,
   hands the task over without a restore gap.
3. `place_standbys`: the standby replicas, never where a copy already is.

Nothing here talks to a broker: the same inputs give the same plan on any leader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ..topology import TaskId

# (task, member) -> how costly that member's copy is to bring up to date: its restore lag.
Cost = Callable[[TaskId, str], float]


def _no_cost(task: TaskId, member: str) -> float:
    return 0.0


def balance_tasks(
    tasks: Sequence[TaskId],
    previous: Mapping[str, set[TaskId]],
    cost: Cost = _no_cost,
    stateful: Collection[int] = (),
) -> dict[str, set[TaskId]]:
    """Every task to one member: each sub-topology spread evenly, as few moves as that allows.

    `previous` maps each member of the new generation to the tasks it owned;
    `stateful` names the sub-topologies with state. Per sub-topology, each member
    gets its share or one more; the "one more" slots go first to the members that
    have had the fewest so far (so per-member totals, and stateful totals, differ by
    at most one too), and among those to the members that held more of it.
    """
    members = sorted(previous)
    if not members:
        return {}
    by_sub: dict[int, list[TaskId]] = {}
    for task in tasks:
        by_sub.setdefault(task.subtopology, []).append(task)
    plan: dict[str, set[TaskId]] = {m: set() for m in members}
    extras = dict.fromkeys(members, 0)
    for sub in sorted(by_sub, key=lambda s: (s not in stateful, s)):
        sub_tasks = by_sub[sub]
        held = {m: previous[m] & set(sub_tasks) for m in members}
        orphans = set(sub_tasks).difference(*held.values())

        def claim(
            m: str, held: dict[str, set[TaskId]] = held, orphans: set[TaskId] = orphans
        ) -> tuple[int, int, float, str]:
            # Fewest extra slots so far; then who held more of it; then who takes its
            # orphaned tasks (their owner left) the cheapest.
            cheapest = min((cost(t, m) for t in orphans), default=0.0)
            return (extras[m], -len(held[m]), cheapest, m)

        base, extra = divmod(len(sub_tasks), len(members))
        chosen = sorted(members, key=claim)[:extra]
        for m in chosen:
            extras[m] += 1
        quota = {m: base + (m in chosen) for m in members}
        _fill(sub_tasks, held, quota, cost, plan)
    return plan


def _fill(
    tasks: Sequence[TaskId],
    held: Mapping[str, set[TaskId]],
    quota: Mapping[str, int],
    cost: Cost,
    plan: dict[str, set[TaskId]],
) -> None:
    """One sub-topology's tasks into `plan`, each member up to its quota."""
    count = dict.fromkeys(quota, 0)
    taken: set[TaskId] = set()

    def take(task: TaskId, member: str) -> None:
        plan[member].add(task)
        taken.add(task)
        count[member] += 1

    # Keep what each member held; members that held more choose first. A member
    # over its quota lets go first of the tasks another member claims too (a zombie
    # and its replacement), then of those another member has the cheapest copy of
    # (a warm-up, a standby).
    for member in sorted(held, key=lambda m: (-len(held[m]), m)):
        others = [m for m in quota if m != member]

        def letting_go(task: TaskId, others: list[str] = others) -> tuple[bool, float, TaskId]:
            contested = any(task in held[m] for m in others)
            return (contested, -min((cost(task, m) for m in others), default=math.inf), task)

        for task in sorted(held[member] - taken, key=letting_go):
            if count[member] >= quota[member]:
                break
            take(task, member)
    # The rest: the cheapest (task, member) pairs first, within the quotas.
    pairs = sorted((cost(t, m), t, m) for t in tasks if t not in taken for m in quota)
    for _, task, member in pairs:
        if task not in taken and count[member] < quota[member]:
            take(task, member)


@dataclass(frozen=True)
class Hold:
    """A stateful task kept on a caught-up member while its planned one warms up."""

    task: TaskId
    kept_on: str
    planned: str
    lag: float  # the planned member's restore lag
    warming: bool  # False: no warm-up slot was left this time


def hold_for_warmups(
    plan: dict[str, set[TaskId]],
    previous: Mapping[str, set[TaskId]],
    stateful_tasks: Sequence[TaskId],
    lag: Cost,
    acceptable_lag: float,
    max_warmups: int,
    warming: Mapping[str, Collection[TaskId]] = {},
) -> tuple[dict[str, set[TaskId]], list[Hold]]:
    """Keep each stateful task planned onto a lagging member on a caught-up one (KIP-441).

    Changes `plan` in place; returns the warm-up copies per member and the holds.
    A task's caught-up member is its previous owner when that one is caught up,
    else the caught-up member with the least lag. With no caught-up member the task
    moves as planned (someone restores it either way). At most `max_warmups`
    warm-ups in the group at once (0: no holds, tasks move at once and restore);
    tasks whose planned member already warms them (`warming`) keep their slot first.
    """
    warmups: dict[str, set[TaskId]] = {m: set() for m in plan}
    if max_warmups <= 0:
        return warmups, []
    owner = {t: m for m, ts in plan.items() for t in ts}
    lagging = [t for t in stateful_tasks if lag(t, owner[t]) > acceptable_lag]
    lagging.sort(key=lambda t: (t not in warming.get(owner[t], ()), t))
    holds: list[Hold] = []
    left = max_warmups
    for task in lagging:
        planned = owner[task]
        caught_up = [m for m in plan if lag(task, m) <= acceptable_lag]
        if not caught_up:
            continue
        keeper = min(caught_up, key=lambda m: (task not in previous[m], lag(task, m), m))
        plan[planned].discard(task)
        plan[keeper].add(task)
        if left > 0:
            warmups[planned].add(task)
            left -= 1
        holds.append(Hold(task, keeper, planned, lag(task, planned), task in warmups[planned]))
    return warmups, holds


def place_standbys(
    active: Mapping[str, set[TaskId]],
    stateful: Sequence[TaskId],
    replicas: int,
    rack: Mapping[str, str | None],
    has_state: Callable[[TaskId, str], bool] = lambda task, member: False,
    state_dir: Mapping[str, str | None] = {},
) -> dict[str, set[TaskId]]:
    """`replicas` standbys per stateful task, never on its active member.

    Never on a member that shares a copy's state directory either (processes of one
    `--processes` supervisor share theirs: a standby there would wait on the
    active's lock for ever). Preferred, in order: another rack than the copies
    placed so far, a member that already has the task's state (sticky, little to
    catch up), the least loaded.
    """
    owner = {t: m for m, ts in active.items() for t in ts}
    standby: dict[str, set[TaskId]] = {m: set() for m in active}
    for _ in range(replicas):
        for task in stateful:
            copies = [owner[task], *(m for m, ts in standby.items() if task in ts)]
            racks = {rack.get(m) for m in copies} - {None}
            dirs = {state_dir.get(m) for m in copies} - {None}
            candidates = [m for m in active if m not in copies and (state_dir.get(m) not in dirs)]
            if not candidates:
                continue
            target = min(
                candidates,
                key=lambda m: (
                    rack.get(m) is not None and rack.get(m) in racks,
                    not has_state(task, m),
                    len(standby[m]) + len(active[m]),
                    m,
                ),
            )
            standby[target].add(task)
    return standby


def explain_moves(
    previous: Mapping[str, set[TaskId]],
    plan: Mapping[str, set[TaskId]],
    holds: Sequence[Hold],
    warmed: Mapping[str, Collection[TaskId]],
    name: Callable[[str], str],
) -> list[str]:
    """Why tasks moved, or were held back: one line per (from, to, reason)."""
    moved: dict[tuple[str, str], list[TaskId]] = {}
    for member in sorted(plan):
        for task in sorted(plan[member] - previous.get(member, set())):
            holders = [m for m in sorted(previous) if task in previous[m]]
            if not holders:
                key = (
                    f"to {name(member)}",
                    "no worker in the group held them (new, or their worker left)",
                )
            elif task in warmed.get(member, ()):
                key = (f"{name(holders[0])} -> {name(member)}", "the warm-up copies caught up")
            else:
                key = (
                    f"{name(holders[0])} -> {name(member)}",
                    f"spreading sub-topology {task.subtopology}",
                )
            moved.setdefault(key, []).append(task)
    lines = [f"tasks {_ids(ts)} move {where}: {why}" for (where, why), ts in moved.items()]
    held: dict[tuple[str, str, bool], list[Hold]] = {}
    for hold in holds:
        held.setdefault((hold.kept_on, hold.planned, hold.warming), []).append(hold)
    for (kept_on, planned, warming), hs in held.items():
        why = "warms up copies" if warming else "has no warm-up slot free (max_warmup_replicas)"
        lines.append(
            f"tasks {_ids([h.task for h in hs])} stay on {name(kept_on)} while "
            f"{name(planned)} {why}: restore lag up to {max(h.lag for h in hs):.0f} records"
        )
    return lines


def _ids(tasks: Sequence[TaskId], shown: int = 16) -> str:
    names = [str(t) for t in tasks]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return " ".join(names[:shown]) + more
