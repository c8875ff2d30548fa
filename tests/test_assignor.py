"""The task assignor: whole tasks, each sub-topology spread, sticky (moves are counted),
warm-ups before a stateful task moves (KIP-441)."""

from hypothesis import given
from hypothesis import strategies as st

import streamkit as sk
from streamkit.runtime.assignor import MemberInfo, decode_member, encode_member
from streamkit.runtime.placement import balance_tasks, place_standbys
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
        name="host:12",
        state_dir="host:/data/app",
        lags={TaskId(0, 2): 7},
        warmup=frozenset({TaskId(0, 2)}),
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
    racks = {m: i.rack for m, i in info.items()}
    standby = place_standbys(active, stateful, 1, racks)
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
    two = place_standbys(active, stateful, 2, racks)
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
    from streamkit.runtime.assignor import TaskPlanner

    app = _counting_app("lag")

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


# Each sub-topology spread ----------------------------------------------------------


def check_spread(
    plan: dict[str, set[TaskId]], tasks: list[TaskId], stateful: set[int] = frozenset()
) -> None:
    """Complete; per member, each sub-topology's count, the stateful count and the
    total each differ by at most one."""
    check_complete_and_balanced(plan, tasks)
    for sub in {t.subtopology for t in tasks}:
        counts = [sum(t.subtopology == sub for t in ts) for ts in plan.values()]
        assert max(counts) - min(counts) <= 1, (sub, plan)
    counts = [sum(t.subtopology in stateful for t in ts) for ts in plan.values()]
    assert max(counts) - min(counts) <= 1, ("stateful", plan)


def test_a_second_member_gets_half_of_every_subtopology() -> None:
    # The issue's case: the first worker owned both sub-topologies' 4 tasks; the second
    # used to get all of sub-topology 1 and none of 0.
    tasks = [TaskId(s, p) for s in range(2) for p in range(4)]
    plan = balance_tasks(tasks, {"a": set(tasks), "b": set()}, stateful={0})
    check_spread(plan, tasks, {0})
    assert {t.subtopology for t in plan["b"]} == {0, 1}
    assert moves({"a": set(tasks)}, plan) == 4


def test_odd_counts_put_the_extra_tasks_on_different_members() -> None:
    # Three sub-topologies of 3 tasks over 2 members: 5 and 4, not 6 and 3.
    tasks = [TaskId(s, p) for s in range(3) for p in range(3)]
    plan = balance_tasks(tasks, {"a": set(), "b": set()}, stateful={0, 2})
    check_spread(plan, tasks, {0, 2})
    assert sorted(len(ts) for ts in plan.values()) == [4, 5]


@st.composite
def topologies_and_histories(draw: st.DrawFn) -> tuple[list[TaskId], set[int], dict]:
    subs = draw(st.lists(st.integers(1, 9), min_size=1, max_size=5))  # tasks per sub
    tasks = [TaskId(s, p) for s, n in enumerate(subs) for p in range(n)]
    stateful = {s for s in range(len(subs)) if draw(st.booleans())}
    members = [f"m{i}" for i in range(draw(st.integers(1, 6)))]
    # Each task was owned by one member, nobody (new, or its owner left), or two
    # (a zombie and its replacement).
    previous: dict[str, set[TaskId]] = {m: set() for m in members}
    for task in tasks:
        for owner in draw(st.lists(st.sampled_from([*members, None]), max_size=2)):
            if owner is not None:
                previous[owner].add(task)
    return tasks, stateful, previous


@given(topologies_and_histories())
def test_any_topology_and_membership_gives_a_spread_sticky_plan(
    case: tuple[list[TaskId], set[int], dict[str, set[TaskId]]],
) -> None:
    tasks, stateful, previous = case
    plan = balance_tasks(tasks, previous, stateful=stateful)
    check_spread(plan, tasks, stateful)
    # Sticky: a member keeps, of each sub-topology, what it held up to its fair share
    # (tasks nobody else claimed).
    members = len(previous)
    for member, held in previous.items():
        claimed_elsewhere = set().union(*(ts for m, ts in previous.items() if m != member))
        for sub in {t.subtopology for t in tasks}:
            own = {t for t in held - claimed_elsewhere if t.subtopology == sub}
            share = sum(t.subtopology == sub for t in tasks) // members
            assert len(plan[member] & own) >= min(len(own), share)
    # Stable: the same members (under new ids) planning again move nothing.
    renamed = {f"new-{m}": ts for m, ts in plan.items()}
    again = balance_tasks(tasks, renamed, stateful=stateful)
    assert again == renamed


# Warm-ups (KIP-441) ------------------------------------------------------------------


def stateful_app(partitions: int = 4):  # type: ignore[no-untyped-def]
    import streamkit as sk

    app = sk.App("warm")
    events = app.topic("events", partitions=partitions)
    totals = app.table("totals", default=int)

    @app.agent(events)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key in stream.items():
            totals[key] += 1

    return app.topology()


def plan_of(planner, members: dict[str, MemberInfo]) -> dict[str, MemberInfo]:  # type: ignore[no-untyped-def]
    data = {m: encode_member(i) for m, i in members.items()}
    return {m: decode_member(d) for m, (_, d) in planner.assign(data).items()}


def test_a_caught_up_owner_keeps_its_tasks_while_the_new_member_warms_up() -> None:
    # HighAvailabilityTaskAssignorTest.shouldAssignWarmupReplicasEvenIfNoStandbyReplicasConfigured
    # and .shouldNotAssignMoreThanMaxWarmupReplicas: client1 keeps every active task,
    # client2 gets warm-ups only, at most max.warmup.replicas of them.
    from streamkit.runtime.assignor import TaskPlanner

    t = [TaskId(0, p) for p in range(4)]
    offsets = dict.fromkeys(t, 200_000)
    for max_warmups, expected in ((1, 1), (2, 2), (4, 2)):
        planner = TaskPlanner(
            stateful_app(), MemberInfo, acceptable_recovery_lag=100, max_warmup_replicas=max_warmups
        )
        plan = plan_of(
            planner, {"a": MemberInfo(active=frozenset(t), offsets=offsets), "b": MemberInfo()}
        )
        assert plan["a"].active == set(t) and not plan["b"].active
        assert len(plan["b"].warmup) == expected and plan["b"].warmup <= plan["b"].standby
        assert not plan["a"].warmup and not plan["a"].standby
    # Once b's warm-ups report a lag within the bound, they move: a hands over.
    warm = plan["b"].warmup
    plan = plan_of(
        planner,
        {
            "a": MemberInfo(active=frozenset(t), offsets=offsets),
            "b": MemberInfo(
                standby=warm,
                offsets=dict.fromkeys(warm, 199_000),
                lags=dict.fromkeys(warm, 40),
            ),
        },
    )
    assert plan["b"].active == warm and plan["a"].active == set(t) - warm
    assert not plan["b"].warmup


def test_without_warmups_a_task_moves_at_once() -> None:
    from streamkit.runtime.assignor import TaskPlanner

    t = [TaskId(0, p) for p in range(4)]
    planner = TaskPlanner(
        stateful_app(), MemberInfo, acceptable_recovery_lag=100, max_warmup_replicas=0
    )
    plan = plan_of(
        planner,
        {"a": MemberInfo(active=frozenset(t), offsets=dict.fromkeys(t, 9_999)), "b": MemberInfo()},
    )
    assert len(plan["a"].active) == len(plan["b"].active) == 2 and not plan["b"].warmup


def test_members_sharing_a_state_directory_are_caught_up_and_hold_no_standbys_of_each_other() -> (
    None
):
    from streamkit.runtime.assignor import TaskPlanner

    t = [TaskId(0, p) for p in range(4)]
    planner = TaskPlanner(
        stateful_app(), MemberInfo, standby_replicas=1, acceptable_recovery_lag=100
    )
    # Two processes of one supervisor: both see every task's files in their shared dir.
    shared = {"offsets": dict.fromkeys(t, 5_000), "state_dir": "h:/d"}
    plan = plan_of(
        planner,
        {"a": MemberInfo(active=frozenset(t), **shared), "b": MemberInfo(**shared)},
    )
    assert len(plan["b"].active) == 2 and not plan["b"].warmup
    assert not plan["a"].standby and not plan["b"].standby


@st.composite
def groups(draw: st.DrawFn) -> tuple[dict[str, MemberInfo], int, int, int]:
    t = [TaskId(0, p) for p in range(6)]
    members: dict[str, MemberInfo] = {}
    free = list(t)
    for i in range(draw(st.integers(1, 4))):
        mine = draw(st.lists(st.sampled_from(free), unique=True)) if free else []
        free = [x for x in free if x not in mine]
        members[f"m{i}"] = MemberInfo(
            active=frozenset(mine),
            offsets={x: draw(st.integers(0, 1_000)) for x in draw(st.lists(st.sampled_from(t)))},
            rack=draw(st.sampled_from(["r1", "r2", None])),
            state_dir=draw(st.sampled_from(["h1", "h2", None])),
        )
    return members, draw(st.integers(0, 2)), draw(st.integers(0, 3)), draw(st.integers(0, 500))


@given(groups())
def test_any_group_gets_whole_tasks_bounded_warmups_and_standbys_apart(
    case: tuple[dict[str, MemberInfo], int, int, int],
) -> None:
    from streamkit.runtime.assignor import TaskPlanner

    members, replicas, max_warmups, acceptable = case
    planner = TaskPlanner(
        stateful_app(6),
        MemberInfo,
        standby_replicas=replicas,
        acceptable_recovery_lag=acceptable,
        max_warmup_replicas=max_warmups,
    )
    plan = plan_of(planner, members)
    owner = {task: m for m, i in plan.items() for task in i.active}
    assert sorted(owner) == [TaskId(0, p) for p in range(6)]
    assert sum(len(i.warmup) for i in plan.values()) <= max_warmups
    for member, info in plan.items():
        assert info.warmup <= info.standby
        for task in info.standby:
            active = owner[task]
            assert active != member
            if task not in info.warmup and members[member].state_dir is not None:
                assert members[member].state_dir != members[active].state_dir


def test_the_planner_says_why_tasks_moved(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    import streamkit as sk
    from streamkit.runtime.assignor import TaskPlanner

    app = sk.App("why")
    a, b = app.topic("a", partitions=2), app.topic("b", partitions=2)

    @app.agent(a)
    async def first(stream):  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    @app.agent(b)
    async def second(stream):  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    all_tasks = frozenset(TaskId(s, p) for s in range(2) for p in range(2))
    planner = TaskPlanner(app.topology(), MemberInfo)
    with caplog.at_level(logging.INFO, "streamkit.assignor"):
        plan_of(
            planner, {"a": MemberInfo(active=all_tasks, name="h:1"), "b": MemberInfo(name="h:2")}
        )
    assert "tasks 0_1 move h:1 -> h:2: spreading sub-topology 0" in caplog.text
    assert "tasks 1_1 move h:1 -> h:2: spreading sub-topology 1" in caplog.text


def test_a_member_still_restoring_a_task_is_not_caught_up() -> None:
    # Its checkpoint is the most advanced one reported, but its member says how far
    # the changelog goes: no one is caught up, so the task moves as planned.
    from streamkit.runtime.assignor import TaskPlanner

    t = [TaskId(0, p) for p in range(4)]
    planner = TaskPlanner(stateful_app(), MemberInfo, acceptable_recovery_lag=10_000)
    restoring = MemberInfo(active=frozenset(t), offsets=dict.fromkeys(t, 10_000))
    for lags, held in (({}, True), (dict.fromkeys(t, 90_000), False)):
        a = MemberInfo(active=restoring.active, offsets=restoring.offsets, lags=lags)
        plan = plan_of(planner, {"a": a, "b": MemberInfo()})
        assert bool(plan["b"].warmup) is held
        assert len(plan["b"].active) == (0 if held else 2)


def test_every_member_learns_which_endpoint_runs_which_task() -> None:
    """Kafka Streams' application.server: members send their endpoint, and each
    assignment carries every endpoint's active and standby tasks (partitionsByHost)."""
    import json

    from streamkit.runtime.assignor import TaskPlanner

    app = _counting_app("hosts")

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


def _counting_app(name: str) -> sk.App:
    """One sub-topology of 4 stateful tasks: an agent counting events in a table."""
    app = sk.App(name)
    events = app.topic("events", partitions=4)
    totals = app.table("totals", default=int)

    @app.agent(events)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key in stream.items():
            totals[key] += 1

    return app
