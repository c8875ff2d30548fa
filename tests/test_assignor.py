"""The task assignor: whole tasks, balanced, sticky (moves are counted)."""

from hypothesis import given
from hypothesis import strategies as st

from streamkit.runtime.assignor import (
    MemberInfo,
    balance_tasks,
    decode_member,
    encode_member,
    place_standbys,
)
from streamkit.topology import TaskId

TASKS = [TaskId(s, p) for s in range(2) for p in range(6)]  # 12 tasks


def moves(before: dict[str, set[TaskId]], after: dict[str, set[TaskId]]) -> int:
    return sum(len(after[m] - before.get(m, set())) for m in after)


def check_complete_and_balanced(plan: dict[str, set[TaskId]], tasks: list[TaskId]) -> None:
    owned = [t for ts in plan.values() for t in ts]
    assert sorted(owned) == sorted(tasks)  # each task exactly once
    counts = [len(ts) for ts in plan.values()]
    assert max(counts) - min(counts) <= 1


def test_first_assignment_spreads_evenly() -> None:
    plan = balance_tasks(TASKS, {"a": set(), "b": set(), "c": set()})
    check_complete_and_balanced(plan, TASKS)
    assert [len(plan[m]) for m in "abc"] == [4, 4, 4]


def test_same_members_move_nothing() -> None:
    first = balance_tasks(TASKS, {"a": set(), "b": set()})
    again = balance_tasks(TASKS, {"x": first["a"], "y": first["b"]})  # new member ids
    assert again == {"x": first["a"], "y": first["b"]}


def test_a_joining_member_takes_only_what_it_needs() -> None:
    two = balance_tasks(TASKS, {"a": set(), "b": set()})
    three = balance_tasks(TASKS, {"a": two["a"], "b": two["b"], "c": set()})
    check_complete_and_balanced(three, TASKS)
    assert moves(two, three) == 4 == len(three["c"])
    assert three["a"] <= two["a"] and three["b"] <= two["b"]


def test_a_leaving_member_moves_only_its_tasks() -> None:
    three = balance_tasks(TASKS, {"a": set(), "b": set(), "c": set()})
    two = balance_tasks(TASKS, {"a": three["a"], "b": three["b"]})
    check_complete_and_balanced(two, TASKS)
    assert moves(three, two) == len(three["c"]) == 4


def test_more_members_than_tasks_leaves_some_idle() -> None:
    tasks = TASKS[:2]
    plan = balance_tasks(tasks, {m: set() for m in "abcd"})
    check_complete_and_balanced(plan, tasks)
    assert sorted(len(ts) for ts in plan.values()) == [0, 0, 1, 1]


def test_conflicting_claims_are_resolved() -> None:
    # Two members claim the same tasks (a zombie and its replacement, say).
    plan = balance_tasks(TASKS, {"a": set(TASKS), "b": set(TASKS)})
    check_complete_and_balanced(plan, TASKS)


@given(
    n_tasks=st.integers(0, 30),
    members=st.integers(1, 7),
    owners=st.lists(st.integers(-1, 6), min_size=30, max_size=30),
)
def test_any_history_gives_a_complete_balanced_sticky_plan(
    n_tasks: int, members: int, owners: list[int]
) -> None:
    tasks = [TaskId(0, p) for p in range(n_tasks)]
    # A conflict-free history: task p was owned by member owners[p] (or nobody, or a
    # member that has since left).
    previous: dict[str, set[TaskId]] = {f"m{i}": set() for i in range(members)}
    for task, owner in zip(tasks, owners, strict=False):
        if f"m{owner}" in previous:
            previous[f"m{owner}"].add(task)
    plan = balance_tasks(tasks, previous)
    check_complete_and_balanced(plan, tasks)
    base = n_tasks // members
    for member, held in previous.items():
        assert len(plan[member] & held) >= min(len(held), base)


def test_metadata_round_trip() -> None:
    info = MemberInfo(
        active=frozenset({TaskId(0, 1), TaskId(3, 12)}),
        standby=frozenset({TaskId(0, 2)}),
        offsets={TaskId(0, 2): 41},
        rack="eu-1a",
    )
    assert decode_member(encode_member(info)) == info
    assert decode_member(b"") == MemberInfo()
    assert decode_member(b"garbage") == MemberInfo()


def test_planner_hands_out_whole_tasks_as_partitions() -> None:
    import streamkit as sk
    from streamkit.runtime.assignor import TaskPlanner
    from streamkit.transport import TopicPartition

    app = sk.App("plan")
    a = app.topic("a", partitions=4)
    b = app.topic("b", partitions=4)

    @app.agent([a, b])
    async def both(stream):  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    planner = TaskPlanner(app.topology(), MemberInfo)
    plan = planner.assign({"m1": b"", "m2": planner.member_metadata()})
    partitions = {m: parts for m, (parts, _) in plan.items()}
    assert sorted(len(p) for p in partitions.values()) == [4, 4]
    for parts in partitions.values():
        numbers = {tp.partition for tp in parts}
        # Task p means partition p of both topics, on the same member.
        assert parts == {TopicPartition(t, n) for t in ("a", "b") for n in numbers}
    tasks = {m: decode_member(data).active for m, (_, data) in plan.items()}
    assert sorted(t for ts in tasks.values() for t in ts) == [TaskId(0, p) for p in range(4)]


def test_standbys_never_sit_with_their_active_copy_and_prefer_other_racks() -> None:
    active = {"a": {TaskId(0, 0), TaskId(0, 1)}, "b": {TaskId(0, 2)}, "c": {TaskId(0, 3)}}
    info = {
        "a": MemberInfo(rack="r1"),
        "b": MemberInfo(rack="r1"),
        "c": MemberInfo(rack="r2"),
    }
    stateful = sorted(t for ts in active.values() for t in ts)
    standby = place_standbys(active, stateful, 1, info)
    owner = {t: m for m, ts in active.items() for t in ts}
    for member, tasks in standby.items():
        for task in tasks:
            assert owner[task] != member
    placed = sorted(t for ts in standby.values() for t in ts)
    assert placed == stateful  # one replica each
    # Tasks active on rack r1 get their standby on r2 (c), c's task on r1.
    assert standby["c"] == {TaskId(0, 0), TaskId(0, 1), TaskId(0, 2)}
    assert standby["a"] | standby["b"] == {TaskId(0, 3)}
    # Two replicas: each task has two copies besides the active one when members allow.
    two = place_standbys(active, stateful, 2, info)
    for task in stateful:
        holders = [m for m, ts in two.items() if task in ts]
        assert len(holders) == 2 and owner[task] not in holders


def test_a_moving_task_goes_to_the_caught_up_member() -> None:
    # "a" died; of b and c, c holds a caught-up standby of a's task 0_0.
    tasks = [TaskId(0, p) for p in range(4)]
    previous = {"b": {TaskId(0, 1), TaskId(0, 2)}, "c": {TaskId(0, 3)}}
    lag = {("b", TaskId(0, 0)): 5_000_000, ("c", TaskId(0, 0)): 3}
    plan = balance_tasks(tasks, previous, lambda t, m: lag.get((m, t), 0))
    assert TaskId(0, 0) in plan["c"]
    # Without the preference, the least loaded would still be c here; make b emptier.
    previous = {"b": {TaskId(0, 1)}, "c": {TaskId(0, 2), TaskId(0, 3)}}
    plan = balance_tasks(tasks, previous, lambda t, m: lag.get((m, t), 0))
    assert TaskId(0, 0) in plan["b"]  # c is full (2 of 4): balance wins, b restores
    lag_c_wins = {("b", TaskId(0, 0)): 5_000_000, ("c", TaskId(0, 0)): 3}
    tasks3 = [TaskId(0, p) for p in range(5)]
    previous3 = {"b": {TaskId(0, 1), TaskId(0, 4)}, "c": {TaskId(0, 2), TaskId(0, 3)}}
    plan3 = balance_tasks(tasks3, previous3, lambda t, m: lag_c_wins.get((m, t), 0))
    assert TaskId(0, 0) in plan3["c"]  # both may take the extra slot: the caught-up one does


def test_planner_reads_lag_from_member_offsets_and_places_standbys() -> None:
    import streamkit as sk
    from streamkit.runtime.assignor import TaskPlanner

    app = sk.App("lag")
    events = app.topic("events", partitions=4)
    totals = app.table("totals", default=int)

    @app.agent(events)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key in stream.items():
            totals[key] += 1

    planner = TaskPlanner(
        app.topology(), MemberInfo, standby_replicas=1, acceptable_recovery_lag=100
    )
    t = [TaskId(0, p) for p in range(4)]
    members = {
        # The member that ran 0_0 is gone; b's copy of it is far behind, c's is current.
        "b": encode_member(MemberInfo(active=frozenset(t[1:3]), offsets={t[0]: 10})),
        "c": encode_member(MemberInfo(active=frozenset(t[3:]), offsets={t[0]: 1_000})),
    }
    plan = {m: decode_member(data) for m, (_, data) in planner.assign(members).items()}
    assert plan["c"].active == {t[0], t[3]} and plan["b"].active == {t[1], t[2]}
    assert plan["b"].standby == {t[0], t[3]} and plan["c"].standby == {t[1], t[2]}


def test_every_member_learns_which_endpoint_runs_which_task() -> None:
    """Kafka Streams' application.server: members send their endpoint, and each
    assignment carries every endpoint's active and standby tasks (partitionsByHost)."""
    import json

    import streamkit as sk
    from streamkit.runtime.assignor import TaskPlanner

    app = sk.App("hosts")
    events = app.topic("events", partitions=4)
    totals = app.table("totals", default=int)

    @app.agent(events)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key in stream.items():
            totals[key] += 1

    planner = TaskPlanner(app.topology(), MemberInfo, standby_replicas=1)
    members = {
        "a": encode_member(MemberInfo(endpoint="10.0.0.1:8080")),
        "b": encode_member(MemberInfo(endpoint="10.0.0.2:8080")),
        # A member of an older version sends no endpoint: it is left out of the map.
        "c": json.dumps({"version": 2, "active": [], "standby": [], "offsets": {}}).encode(),
    }
    plan = {m: decode_member(data) for m, (_, data) in planner.assign(members).items()}
    hosts = {"10.0.0.1:8080": plan["a"].active, "10.0.0.2:8080": plan["b"].active}
    standby_hosts = {"10.0.0.1:8080": plan["a"].standby, "10.0.0.2:8080": plan["b"].standby}
    for info in plan.values():
        assert info.hosts == hosts and info.standby_hosts == standby_hosts
    assert decode_member(encode_member(plan["a"])) == plan["a"]
