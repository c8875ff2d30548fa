"""DSL joins through the TopologyTestDriver, with explicit event timestamps: stream-stream
(windowed), stream-table, table-table, foreign-key, co-partitioning checks; and a memory
worker for start-up refusal and for join state restored after a restart."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import committed, read, running, wait_for

import streamkit as sk
from streamkit.cli import main
from streamkit.dsl.joins import JoinWindows, table_join
from streamkit.testing import TopologyTestDriver


def show(left: Any, right: Any) -> str:
    return f"{left}|{right}"


def topics(app: sk.App, *specs: tuple[str, int]) -> list[sk.Topic]:
    return [app.topic(n, key_type=str, value_type=str, partitions=p) for n, p in specs]


# Stream-stream -------------------------------------------------------------------------


def stream_stream_app(
    how: str, window: JoinWindows, partitions: tuple[int, int] = (2, 2)
) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("ssjoin")
    left, right, out = topics(app, ("left", partitions[0]), ("right", partitions[1]), ("out", 2))
    stream = app.stream(left)
    join = {"inner": stream.join, "left": stream.left_join, "outer": stream.outer_join}[how]
    join(app.stream(right), show, window=window, name="j").to(out)
    return app, left, right, out


def test_join_windows_of_is_symmetric_and_checked() -> None:
    window = JoinWindows.of(timedelta(milliseconds=250), grace=0.5)
    assert (window.before_ms, window.after_ms, window.grace_ms) == (250, 250, 500)
    with pytest.raises(sk.ConfigError, match="before \\+ after"):
        JoinWindows(before=-1, after=0.5)
    with pytest.raises(sk.ConfigError, match="grace"):
        JoinWindows.of(1, grace=-1)


def test_inner_join_window_bounds_from_the_left() -> None:
    # A left record at t joins right records in [t - 100, t + 50].
    app, left, right, out = stream_stream_app(
        "inner", JoinWindows(before=0.1, after=0.05, grace=10)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "k", "L", timestamp_ms=1000)
        for ts in (899, 900, 1050, 1051):
            driver.pipe(right, "k", f"r{ts}", timestamp_ms=ts)
        got = [(r.key, r.value, r.timestamp) for r in driver.read_records(out)]
    # Just inside before and after join; just outside do not. Output time: the later one.
    assert got == [("k", "L|r900", 1000), ("k", "L|r1050", 1050)]


def test_inner_join_window_bounds_from_the_right() -> None:
    # A right record at t joins left records in [t - 50, t + 100]: the same pairs, seen
    # from the other side.
    app, left, right, out = stream_stream_app(
        "inner", JoinWindows(before=0.1, after=0.05, grace=10)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(right, "k", "R", timestamp_ms=5000)
        for ts in (4949, 4950, 5100, 5101):
            driver.pipe(left, "k", f"l{ts}", timestamp_ms=ts)
        got = [(r.value, r.timestamp) for r in driver.read_records(out)]
    assert got == [("l4950|R", 5000), ("l5100|R", 5100)]


def test_inner_join_matches_every_record_of_both_sides() -> None:
    app, left, right, out = stream_stream_app("inner", JoinWindows.of(1))
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "k", "a", timestamp_ms=100)
        driver.pipe(left, "k", "b", timestamp_ms=100)  # same key, same timestamp
        driver.pipe(left, "other", "x", timestamp_ms=100)
        driver.pipe(right, "k", "R", timestamp_ms=150)
        driver.pipe(right, "k", "S", timestamp_ms=160)
        assert driver.read_output(out) == [
            ("k", "a|R"),
            ("k", "b|R"),
            ("k", "a|S"),
            ("k", "b|S"),
        ]
        driver.pipe(right, "k", "T", timestamp_ms=5000)  # far away: no partner
        driver.pipe(left, "k", "c", timestamp_ms=9000)
        assert driver.read_output(out) == []


def test_left_join_emits_unmatched_only_when_the_window_closes() -> None:
    # Window +-100 ms, grace 50: a left record at 1000 closes once stream time > 1150.
    app, left, right, out = stream_stream_app("left", JoinWindows.of(0.1, grace=0.05))
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "a", "A", timestamp_ms=1000)
        driver.pipe(left, "b", "B", timestamp_ms=1000)
        driver.pipe(right, "b", "b1", timestamp_ms=1090)  # b matches; a waits
        assert driver.read_output(out) == [("b", "B|b1")]
        driver.pipe(left, "z", "Z", timestamp_ms=1150)  # stream time 1150: still open
        assert driver.read_output(out) == []
        driver.pipe(right, "z", "z1", timestamp_ms=1151)  # 1151 > 1150: a's window closed
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [
            ("a", "A|None", 1000),
            ("z", "Z|z1", 1151),
        ]
        driver.pipe(left, "late-a", "x", timestamp_ms=1200)
        assert driver.read_output(out) == []  # b matched: no "B|None", ever
        assert driver.store("j-outer-shared-store") == {("late-a", 1200, 0): ["x"]}


def test_inner_join_never_emits_unmatched() -> None:
    app, left, right, out = stream_stream_app("inner", JoinWindows.of(0.1))
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "a", "A", timestamp_ms=1000)
        driver.pipe(right, "b", "B", timestamp_ms=1000)
        driver.pipe(left, "c", "C", timestamp_ms=99_000)
        assert driver.read_output(out) == []


def test_outer_join_emits_both_sides_when_their_windows_close() -> None:
    # Left records look 200 ms ahead (close at t + 200), right ones 100 ms (t + 100).
    # As in Kafka Streams, a record of one side tries to emit only once stream time has
    # passed the earliest pending record by its own side's window: the left side's
    # 200 ms, so y at 1101 emits nothing, though b's window closed at 1100.
    app, left, right, out = stream_stream_app("outer", JoinWindows(before=0.1, after=0.2))
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "a", "A", timestamp_ms=1000)
        driver.pipe(right, "b", "B", timestamp_ms=1000)
        driver.pipe(left, "x", "X", timestamp_ms=1100)
        driver.pipe(left, "y", "Y", timestamp_ms=1101)
        assert driver.read_output(out) == []
        driver.pipe(right, "x", "x1", timestamp_ms=1201)
        # Closed together at one timestamp: the right side's first, as Kafka orders them.
        assert [(r.key, r.value, r.timestamp) for r in driver.read_records(out)] == [
            ("b", "None|B", 1000),
            ("a", "A|None", 1000),
            ("x", "X|x1", 1201),
        ]


def test_late_records_still_join_what_the_other_side_holds() -> None:
    # +-100 ms, grace 50: each side holds records 250 ms behind its latest.
    app, left, right, out = stream_stream_app("left", JoinWindows.of(0.1, grace=0.05))
    with TopologyTestDriver(app) as driver:
        driver.pipe(right, "k", "k1", timestamp_ms=900)
        driver.pipe(left, "a", "A", timestamp_ms=1000)
        driver.pipe(right, "a", "a1", timestamp_ms=1040)
        driver.pipe(left, "b", "B", timestamp_ms=1100)
        assert driver.read_output(out) == [("a", "A|a1")]
        # 150 ms behind stream time, past its window's end: joins the held k1 ...
        driver.pipe(left, "k", "K", timestamp_ms=950)
        # ... and a record with no partner is emitted at once, joined with None.
        driver.pipe(left, "m", "M", timestamp_ms=960)
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [
            ("k", "K|k1", 950),
            ("m", "M|None", 960),
        ]


def test_null_keys_pass_a_left_or_outer_side_and_are_dropped_elsewhere() -> None:
    """KIP-962: a side that emits unmatched records emits a null-key record at once."""
    app, left, right, out = stream_stream_app("left", JoinWindows.of(1))
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, None, "A", timestamp_ms=1000)
        driver.pipe(right, None, "b", timestamp_ms=1000)
        driver.pipe(right, "k", None, timestamp_ms=1000)
        assert [(r.key, r.value, r.timestamp) for r in driver.read_records(out)] == [
            (None, "A|None", 1000)
        ]
    assert app.metrics.value("dropped_records", node="j", reason="null key") == 1
    assert app.metrics.value("dropped_records", node="j", reason="null value") == 1


def test_rekeyed_sides_are_repartitioned_to_the_wider_count() -> None:
    app = sk.App("rekeyed")
    left, right, out = topics(app, ("clicks", 2), ("views", 3), ("out", 2))
    by_user = app.stream(left).select_key(lambda _k, v: v.split(":")[0])
    views = app.stream(right).select_key(lambda _k, v: v.split(":")[0])
    by_user.join(views, show, window=JoinWindows.of(1), name="uv").to(out)
    topology = app.topology()
    sizes = {t.name: t.partitions for t in topology.repartition_topics}
    assert sizes == {"rekeyed-uv-left-repartition": 3, "rekeyed-uv-right-repartition": 3}
    with TopologyTestDriver(app) as driver:
        driver.pipe(left, "c1", "alice:home", timestamp_ms=10)
        driver.pipe(right, "v7", "alice:cart", timestamp_ms=20)
        assert driver.read_output(out) == [("alice", "alice:home|alice:cart")]


def stream_stream_worker_app(
    url: str, data_dir: Path
) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("ssrestore", broker=url, data_dir=data_dir, commit_interval_s=0.05)
    left, right, out = topics(app, ("left", 2), ("right", 2), ("out", 2))
    app.stream(left).left_join(app.stream(right), show, window=JoinWindows.of(1), name="j").to(out)
    return app, left, right, out


def remove_join_state(data_dir: Path) -> int:
    files = list(data_dir.glob("ssrestore/*/j-*.sqlite*"))
    for path in files:
        path.unlink()
    return len(files)


async def test_join_state_survives_a_restart_from_the_changelog(
    memory_url: str, tmp_path: Path
) -> None:
    app, left, _, _ = stream_stream_worker_app(memory_url, tmp_path)
    async with running(app):
        await app.send(left, key="a", value="A", timestamp_ms=1000)
        await app.send(left, key="p", value="P", timestamp_ms=1000)
        await wait_for(
            lambda: sum(n or 0 for n in committed(app, left).values()) == 2, what="commit"
        )
    assert remove_join_state(tmp_path) > 0  # only the changelogs remain
    app2, left2, right2, out2 = stream_stream_worker_app(memory_url, tmp_path)
    async with running(app2):
        await app2.send(right2, key="a", value="a1", timestamp_ms=1500)  # joins the buffered A
        await wait_for(lambda: ("a", "A|a1") in read(app2, out2), what="restored join")
        await app2.send(left2, key="z", value="Z", timestamp_ms=9000)  # closes p's window
        await wait_for(lambda: ("p", "P|None") in read(app2, out2), what="restored pending")
    assert ("a", "A|None") not in read(app2, out2)


# Stream-table ---------------------------------------------------------------------------


def orders_app(how: str) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("enrich")
    orders, customers, out = topics(app, ("orders", 2), ("customers", 2), ("enriched", 2))
    table = app.ktable(customers)
    stream = app.stream(orders)
    join = stream.join if how == "inner" else stream.left_join
    join(table, lambda order, customer: f"{order}|{customer}", name="enrich").to(out)
    return app, orders, customers, out


@pytest.mark.parametrize("how", ["inner", "left"])
def test_stream_table_join_looks_the_table_up_on_arrival(how: str) -> None:
    app, orders, customers, out = orders_app(how)
    with TopologyTestDriver(app) as driver:
        driver.pipe(orders, "c1", "o1", timestamp_ms=10)  # no customer yet
        driver.pipe(customers, "c1", "Alice", timestamp_ms=20)  # table updates emit nothing
        driver.pipe(orders, "c1", "o2", timestamp_ms=30)
        driver.pipe(customers, "c1", "Alicia", timestamp_ms=40)
        driver.pipe(orders, "c1", "o3", timestamp_ms=50)
        driver.pipe(customers, "c1", None, timestamp_ms=60)  # tombstone
        driver.pipe(orders, "c1", "o4", timestamp_ms=70)
        got = [(r.key, r.value, r.timestamp) for r in driver.read_records(out)]
    joined = [("c1", "o2|Alice", 30), ("c1", "o3|Alicia", 50)]
    if how == "inner":
        assert got == joined
    else:
        assert got == [("c1", "o1|None", 10), *joined, ("c1", "o4|None", 70)]


def test_stream_table_inner_join_drops_null_keys_and_counts_them() -> None:
    app, orders, customers, out = orders_app("inner")
    with TopologyTestDriver(app) as driver:
        driver.pipe(customers, "c1", "Alice", timestamp_ms=1)
        driver.pipe(orders, None, "o1", timestamp_ms=2)
        assert driver.read_output(out) == []
    assert app.metrics.value("dropped_records", node="enrich", reason="null key") == 1


def test_stream_table_left_join_passes_null_keys_joined_with_nothing() -> None:
    """KIP-962: a left join keeps a record whose key is null."""
    app, orders, customers, out = orders_app("left")
    with TopologyTestDriver(app) as driver:
        driver.pipe(customers, "c1", "Alice", timestamp_ms=1)
        driver.pipe(orders, None, "o1", timestamp_ms=2)
        assert driver.read_output(out) == [(None, "o1|None")]


def test_stream_table_join_reads_derived_and_aggregated_tables() -> None:
    app = sk.App("derived")
    orders, customers, clicks, out, counted = topics(
        app, ("orders", 2), ("customers", 2), ("clicks", 2), ("out", 2), ("counted", 2)
    )
    names = app.ktable(customers).filter(lambda _k, v: v != "hidden").map_values(str.upper)
    counts = app.stream(clicks).group_by_key().count(name="clicks-per-user")
    app.stream(orders).left_join(names, show).to(out)
    app.stream(orders).join(counts, lambda o, n: f"{o}#{n}").to(counted)
    with TopologyTestDriver(app) as driver:
        driver.pipe(customers, "u1", "alice", timestamp_ms=1)
        driver.pipe(customers, "u2", "hidden", timestamp_ms=1)
        driver.pipe_many(clicks, [("u1", "x", 2), ("u1", "y", 3)])
        driver.pipe(orders, "u1", "o1", timestamp_ms=4)
        driver.pipe(orders, "u2", "o2", timestamp_ms=5)
        assert driver.read_output(out) == [("u1", "o1|ALICE"), ("u2", "o2|None")]
        assert driver.read_output(counted) == [("u1", "o1#2")]


def test_stream_joined_after_select_key_is_repartitioned() -> None:
    app = sk.App("bykey")
    orders, customers, out = topics(app, ("orders", 2), ("customers", 3), ("out", 3))
    by_customer = app.stream(orders).select_key(lambda _k, v: v.split(":")[0])
    by_customer.join(app.ktable(customers), show, name="enrich").to(out)
    topology = app.topology()
    assert [(t.name, t.partitions) for t in topology.repartition_topics] == [
        ("bykey-enrich-left-repartition", 3)
    ]
    assert "enrich-left-repartition-sink" in topology.describe()
    with TopologyTestDriver(app) as driver:
        for customer in ("c1", "c2", "c3", "c4"):
            driver.pipe(customers, customer, customer.upper(), timestamp_ms=1)
        for i, customer in enumerate(("c1", "c2", "c3", "c4")):
            driver.pipe(orders, f"o{i}", f"{customer}:{i}", timestamp_ms=2)
        got = sorted(driver.read_output(out))
    assert got == [
        ("c1", "c1:0|C1"),
        ("c2", "c2:1|C2"),
        ("c3", "c3:2|C3"),
        ("c4", "c4:3|C4"),
    ]


# Table-table ------------------------------------------------------------------------------

# (topic, key, value) piped in order, and what the joined table emits for each step.
TABLE_STEPS: list[tuple[str, str, str | None]] = [
    ("l", "a", "A1"),
    ("r", "a", "B1"),
    ("l", "a", "A2"),
    ("r", "b", "Bx"),
    ("r", "a", None),
    ("l", "a", None),
    ("r", "b", None),
]
TABLE_EMITS: dict[str, list[list[tuple[str, str | None]]]] = {
    "inner": [[], [("a", "A1|B1")], [("a", "A2|B1")], [], [("a", None)], [], []],
    "left": [
        [("a", "A1|None")],
        [("a", "A1|B1")],
        [("a", "A2|B1")],
        [],
        [("a", "A2|None")],
        [("a", None)],
        [],
    ],
    "outer": [
        [("a", "A1|None")],
        [("a", "A1|B1")],
        [("a", "A2|B1")],
        [("b", "None|Bx")],
        [("a", "A2|None")],
        [("a", None)],
        [("b", None)],
    ],
}


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
def test_table_table_join_updates_and_deletions_on_both_sides(how: str) -> None:
    app = sk.App("ttjoin")
    left, right, probes, out, probed = topics(
        app, ("l", 2), ("r", 2), ("probes", 2), ("out", 2), ("probed", 2)
    )
    lt, rt = app.ktable(left), app.ktable(right)
    joined = {"inner": lt.join, "left": lt.left_join, "outer": lt.outer_join}[how](rt, show)
    joined.to_stream().to(out)
    # The joined table's value getter, through a stream-table lookup.
    app.stream(probes).left_join(joined, lambda _p, j: j).to(probed)
    with TopologyTestDriver(app) as driver:
        for i, ((topic, key, value), emits) in enumerate(
            zip(TABLE_STEPS, TABLE_EMITS[how], strict=True)
        ):
            driver.pipe(topic, key, value, timestamp_ms=i)
            assert driver.read_output(out) == emits, (i, topic, key, value)
            if i == 3:
                driver.pipe(probes, "a", "?", timestamp_ms=i)
                driver.pipe(probes, "b", "?", timestamp_ms=i)
                expected_b = "None|Bx" if how == "outer" else None
                assert driver.read_output(probed) == [("a", "A2|B1"), ("b", expected_b)]


# Foreign-key joins -----------------------------------------------------------------------


def fk_app(how: str) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App("fkjoin")
    # Orders (by order id) reference customers by id; the tables need not be co-partitioned.
    orders, customers, out = topics(app, ("orders", 3), ("customers", 2), ("out", 3))
    order_table, customer_table = app.ktable(orders), app.ktable(customers)
    join = order_table.join if how == "inner" else order_table.left_join
    result = join(customer_table, show, foreign_key=lambda v: v.split(":")[0], name="oc")
    result.to_stream().to(out)
    return app, orders, customers, out


@pytest.mark.parametrize("how", ["inner", "left"])
def test_foreign_key_join(how: str) -> None:
    app, orders, customers, out = fk_app(how)
    left = how == "left"
    internal = {t.name: t.partitions for t in app.topology().repartition_topics}
    assert internal == {
        "fkjoin-oc-subscription-registration": 2,  # the customers' partitions
        "fkjoin-oc-subscription-response": 3,  # the orders' partitions
    }
    with TopologyTestDriver(app) as driver:

        def step(topic: sk.Topic, key: str, value: str | None) -> list[tuple[str, str | None]]:
            driver.pipe(topic, key, value, timestamp_ms=1)
            return sorted(driver.read_output(out), key=lambda kv: kv[0])

        assert step(customers, "c1", "Alice") == []
        assert step(orders, "o1", "c1:10") == [("o1", "c1:10|Alice")]
        assert step(orders, "o2", "c2:5") == ([("o2", "c2:5|None")] if left else [])
        assert step(customers, "c2", "Bob") == [("o2", "c2:5|Bob")]
        assert step(orders, "o3", "c1:7") == [("o3", "c1:7|Alice")]
        # A right update reaches every left row that references it.
        assert step(customers, "c1", "Alicia") == [("o1", "c1:10|Alicia"), ("o3", "c1:7|Alicia")]
        # A foreign-key change moves the row; the old customer no longer reaches it.
        assert step(orders, "o1", "c2:10") == [("o1", "c2:10|Bob")]
        assert step(customers, "c1", "Al") == [("o3", "c1:7|Al")]
        # A change to a missing customer retracts the result (inner) or keeps the row (left).
        assert step(orders, "o3", "c9:7") == [("o3", "c9:7|None" if left else None)]
        # A right deletion reaches its rows too.
        assert step(customers, "c2", None) == (
            [("o1", "c2:10|None"), ("o2", "c2:5|None")] if left else [("o1", None), ("o2", None)]
        )
        # Deleting a row emits a tombstone even when it had no result (inner), as Kafka
        # Streams does: it cannot know whether a result went out before.
        assert step(orders, "o1", None) == [("o1", None)]
        assert driver.store("oc-output-store") == (
            {"o2": "c2:5|None", "o3": "c9:7|None"} if left else {}
        )
        assert driver.store("oc-subscription-store") == {
            ("c2", "o2"): 1,
            ("c9", "o3"): 1,
        }


def test_foreign_key_join_ignores_responses_for_a_foreign_key_left_behind() -> None:
    app, orders, customers, out = fk_app("inner")
    with TopologyTestDriver(app) as driver:
        driver.pipe(customers, "c1", "Alice", timestamp_ms=1)
        driver.pipe(customers, "c2", "Bob", timestamp_ms=1)
        # Two updates of o1 fetched together: the answer about c2 comes back after o1
        # has moved on to c1, and must not be joined with it.
        driver.writer.write(orders, "o1", "c2:10", (), 2, None)
        driver.pipe(orders, "o1", "c1:11", timestamp_ms=3)
        assert driver.read_output(out) == [("o1", "c1:11|Alice")]
        assert driver.store("oc-output-store") == {"o1": "c1:11|Alice"}


async def test_foreign_key_join_across_sub_topologies_in_a_worker(
    memory_url: str, tmp_path: Path
) -> None:
    app = sk.App("fkworker", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.05)
    orders, customers, out = topics(app, ("orders", 3), ("customers", 2), ("out", 3))
    joined = app.ktable(orders).join(
        app.ktable(customers), show, foreign_key=lambda v: v.split(":")[0]
    )
    joined.to_stream().to(out)
    expected = {f"o{i}": f"c1:{i}|Alice" for i in range(6)}

    def latest() -> dict[str, str]:
        return dict(read(app, out))  # partition order keeps each key's updates in order

    async with running(app):
        await app.send(customers, key="c1", value="Alice")
        for i in range(6):
            await app.send(orders, key=f"o{i}", value=f"c1:{i}")
        await wait_for(lambda: latest() == expected, what="every order joined")
        await app.send(customers, key="c1", value="Bob")
        renamed = {k: v.replace("Alice", "Bob") for k, v in expected.items()}
        await wait_for(lambda: latest() == renamed, what="the update fanned out")


def test_foreign_key_outer_join_is_refused() -> None:
    app = sk.App("fkouter")
    a, b = topics(app, ("a", 1), ("b", 1))
    with pytest.raises(sk.ConfigError, match="inner or left"):
        table_join(app.ktable(a), app.ktable(b), show, "outer", foreign_key=lambda v: v)


# Co-partitioning ---------------------------------------------------------------------------


def mismatched_app(kind: str = "stream-table", url: str = "memory://") -> sk.App:
    app = sk.App("mismatch", broker=url)
    left, right, out = topics(app, ("orders", 2), ("customers", 3), ("out", 2))
    if kind == "stream-stream":
        joined = app.stream(left).join(app.stream(right), show, window=JoinWindows.of(1))
    elif kind == "stream-table":
        joined = app.stream(left).join(app.ktable(right), show)
    else:
        joined = app.ktable(left).join(app.ktable(right), show).to_stream()
    joined.to(out)
    return app


MISMATCH = r"join .* needs co-partitioned inputs .*orders has 2, customers has 3 partitions"


@pytest.mark.parametrize("kind", ["stream-stream", "stream-table", "table-table"])
def test_copartition_mismatch_is_refused_by_the_topology(kind: str) -> None:
    with pytest.raises(sk.TopologyError, match=MISMATCH):
        mismatched_app(kind).topology()


def test_copartition_mismatch_is_refused_by_the_test_driver() -> None:
    with pytest.raises(sk.TopologyError, match=MISMATCH):
        TopologyTestDriver(mismatched_app())


def test_copartition_mismatch_is_refused_by_streamkit_topology() -> None:
    result = CliRunner().invoke(main, ["topology", "test_dsl_joins:mismatched_app"])
    assert result.exit_code == 1
    assert "error: join KSTREAM-JOIN" in result.output
    assert "orders has 2, customers has 3 partitions" in result.output


async def test_copartition_mismatch_stops_a_worker_before_it_consumes(memory_url: str) -> None:
    app = mismatched_app("stream-stream", memory_url)
    orders = app.topics["orders"]
    await app.send(orders, key="o1", value="x")
    with pytest.raises(sk.TopologyError, match=MISMATCH):
        async with running(app):
            pass
    assert committed(app, orders) == {0: None, 1: None}
    assert read(app, app.topics["out"]) == []


# Stream-GlobalKTable (dispatch only; global_table.py implements it) ----------------------


@pytest.mark.skipif(
    importlib.util.find_spec("streamkit.dsl.global_table") is None
    or not hasattr(sk.App, "global_ktable"),
    reason="GlobalKTable (streamkit.dsl.global_table, app.global_ktable) has not landed yet",
)
def test_stream_global_table_join_is_dispatched() -> None:
    app = sk.App("globaljoin")
    orders, products, out = topics(app, ("orders", 2), ("products", 1), ("out", 2))
    products_global = app.global_ktable(products)  # type: ignore[attr-defined]
    app.stream(orders).join(products_global, show, key_selector=lambda _k, v: v, name="g").to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(products, "p1", "Pen", timestamp_ms=1)
        driver.pipe(orders, "o1", "p1", timestamp_ms=2)
        assert driver.read_output(out) == [("o1", "p1|Pen")]


def test_join_arguments_are_checked() -> None:
    app = sk.App("args")
    a, b = topics(app, ("a", 1), ("b", 1))
    stream, table = app.stream(a), app.ktable(b)
    with pytest.raises(sk.ConfigError, match="window=JoinWindows"):
        stream.join(app.stream(a), show)
    with pytest.raises(sk.ConfigError, match="no outer join with a KTable"):
        stream.outer_join(table, show, window=JoinWindows.of(1))  # type: ignore[arg-type]
    with pytest.raises(sk.ConfigError, match="window= is for stream-stream"):
        stream.join(table, show, window=JoinWindows.of(1))
    with pytest.raises(sk.ConfigError, match="not int"):
        stream.join(3, show)  # type: ignore[arg-type]


async def test_a_table_row_earlier_in_time_than_the_stream_joins_whatever_arrived_first(
    memory_url: str, tmp_path: Path
) -> None:
    # Every customer's row (times 0-39) precedes every order (times 1000-1079), and
    # both topics are full before the worker starts. Kafka Streams processes each
    # task's records lowest timestamp first, waiting for a partition that has records
    # on the broker but none fetched yet (max.task.idle.ms 0): every order finds its
    # customer. Fetches of 7 records, orders first, must not change that.
    app = sk.App("early-rows", broker=memory_url, data_dir=tmp_path, max_poll_records=7)
    orders, customers, out = topics(app, ("a-orders", 1), ("z-customers", 1), ("enriched", 1))
    app.stream(orders).left_join(app.ktable(customers), show).to(out)
    for i in range(40):
        await app.send(customers, key=f"c{i}", value=f"C{i}", timestamp_ms=i)
    for i in range(80):
        await app.send(orders, key=f"c{i % 40}", value=f"o{i}", timestamp_ms=1000 + i)
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 80, what="80 outputs")
    assert read(app, out) == [(f"c{i % 40}", f"o{i}|C{i % 40}") for i in range(80)]
