"""The Streams DSL through the test kit: KStream operators, grouping and aggregation,
KTables, error policies, and `streamkit topology` on a DSL app.

Each test builds a small app on its own and drives it with `TopologyTestDriver`
(no broker, no waiting): what it checks is what a user would, the records in the
output topics (keys, values, timestamps, partitions), the stores' contents, the
metrics, and the errors raised.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import read, running, wait_for

import streamkit as sk
from streamkit.errors import AgentError, ConfigError
from streamkit.partitioner import partition_for
from streamkit.testing import TopologyTestDriver

APPS = Path(__file__).resolve().parent / "apps"


def new_app(name: str = "dsl") -> sk.App:
    return sk.App(name)


def repartition_topic(driver: TopologyTestDriver, name: str) -> sk.Topic:
    topic = driver.topology_topic(name)
    assert topic is not None, [t.name for t in driver.topology.internal_topics()]
    return topic


# Stateless operators ----------------------------------------------------------------


def test_stateless_operators_transform_keys_and_values_keeping_timestamp_and_headers() -> None:
    app = new_app()
    src = app.topic("in", key_type=str, value_type=str, partitions=2)
    out = {n: app.topic(n, key_type=str, value_type=Any, partitions=2) for n in "abcdef"}
    stream = app.stream(src)
    stream.filter(lambda k, v: "x" in v).to(out["a"])
    stream.filter_not(lambda k, v: "x" in v).to(out["b"])
    stream.map(lambda k, v: (v, k)).to(out["c"])
    stream.map_values(len).to(out["d"])
    stream.select_key(lambda k, v: v[0]).to(out["e"])
    stream.flat_map(lambda k, v: [(f"{k}{i}", c) for i, c in enumerate(v)]).to(out["f"])

    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "k1", "xy", timestamp_ms=1_000, headers=[("h", b"1")])
        driver.pipe(src, "k2", "pq", timestamp_ms=2_000)
        assert driver.read_output(out["a"]) == [("k1", "xy")]
        assert driver.read_output(out["b"]) == [("k2", "pq")]
        assert driver.read_output(out["c"]) == [("xy", "k1"), ("pq", "k2")]
        assert driver.read_output(out["d"]) == [("k1", 2), ("k2", 2)]
        assert driver.read_output(out["e"]) == [("x", "xy"), ("p", "pq")]
        flat = driver.read_records(out["f"])
    assert [(r.key, r.value) for r in flat] == [
        ("k10", "x"),
        ("k11", "y"),
        ("k20", "p"),
        ("k21", "q"),
    ]
    # Outputs keep the input's event time and headers (Kafka Streams' propagation).
    assert [r.timestamp for r in flat] == [1_000, 1_000, 2_000, 2_000]
    assert [list(r.headers) for r in flat][:2] == [[("h", b"1")], [("h", b"1")]]


def test_chained_maps_hand_key_value_time_and_headers_to_fixed_and_chosen_sinks() -> None:
    # A map whose child is a map or a fixed-topic sink hands it the record's parts
    # (`process_parts`); a chooser still gets the record. Each output is as if every
    # node had passed a Record on.
    app = new_app()
    src = app.topic("in", key_type=str, value_type=str)
    fixed = app.topic("fixed", key_type=str, value_type=str)
    chosen = {n: app.topic(n, key_type=str, value_type=str) for n in ("short", "long")}
    twice = app.stream(src).map(lambda k, v: (k.upper(), v + "!")).map(lambda k, v: (v, k))
    twice.to(fixed)
    twice.map(lambda k, v: (k, v)).to(lambda k, v, r: "short" if len(k) < 4 else "long")

    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "a", "xy", timestamp_ms=1_000, headers=[("h", b"1")])
        driver.pipe(src, "b", "pqrs", timestamp_ms=2_000)
        out = driver.read_records(fixed)
        assert [(r.key, r.value, r.timestamp) for r in out] == [
            ("xy!", "A", 1_000),
            ("pqrs!", "B", 2_000),
        ]
        assert [list(r.headers) for r in out] == [[("h", b"1")], []]
        assert driver.read_output(chosen["short"]) == [("xy!", "A")]
        assert driver.read_output(chosen["long"]) == [("pqrs!", "B")]


def test_flat_map_values_peek_and_foreach_see_every_record_in_order() -> None:
    app = new_app()
    src = app.topic("lines", key_type=str, value_type=str)
    words = app.topic("words", key_type=str, value_type=str)
    peeked: list[tuple[str, str]] = []
    each: list[tuple[str, str]] = []
    stream = app.stream(src).flat_map_values(str.split).peek(lambda k, v: peeked.append((k, v)))
    stream.to(words)
    stream.foreach(lambda k, v: each.append((k, v)))

    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "doc", "to be or")
        driver.pipe(src, "doc", "")  # no words: nothing downstream
        driver.pipe(src, "doc2", "not")
        assert driver.read_output(words) == [
            ("doc", "to"),
            ("doc", "be"),
            ("doc", "or"),
            ("doc2", "not"),
        ]
    assert peeked == each == [("doc", "to"), ("doc", "be"), ("doc", "or"), ("doc2", "not")]


# split, merge, to -----------------------------------------------------------------------


def test_split_sends_each_record_to_the_first_matching_branch() -> None:
    app = new_app()
    src = app.topic("n", key_type=str, value_type=int, partitions=3)
    outs = {
        n: app.topic(n, key_type=str, value_type=int, partitions=3)
        for n in ("neg", "small", "rest")
    }
    branches = (
        app.stream(src)
        .split(prefix="b-")
        .branch(lambda k, v: v < 0, name="neg")
        .branch(lambda k, v: v < 10, name="small")  # -1 also < 10: the first branch wins
        .default_branch(name="rest")
    )
    assert set(branches) == {"b-neg", "b-small", "b-rest"}
    for name, stream in branches.items():
        stream.to(outs[name.removeprefix("b-")])

    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", -1), ("b", 5), ("c", 50), ("d", -7), ("e", 9)])
        assert driver.read_output(outs["neg"]) == [("a", -1), ("d", -7)]
        assert driver.read_output(outs["small"]) == [("b", 5), ("e", 9)]
        assert driver.read_output(outs["rest"]) == [("c", 50)]


def test_split_without_default_branch_drops_unmatched_and_numbers_unnamed_branches() -> None:
    app = new_app()
    src = app.topic("n", key_type=str, value_type=int)
    even = app.topic("even", key_type=str, value_type=int)
    branches = app.stream(src).split().branch(lambda k, v: v % 2 == 0).no_default_branch()
    assert list(branches) == ["1"]
    branches["1"].to(even)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", 1), ("b", 2), ("c", 3), ("d", 4)])
        assert driver.read_output(even) == [("b", 2), ("d", 4)]


def test_split_refuses_two_branches_with_one_name() -> None:
    app = new_app()
    src = app.topic("n", key_type=str, value_type=int)
    split = app.stream(src).split().branch(lambda k, v: v > 0, name="x")
    with pytest.raises(ConfigError, match="two branches named 'x'"):
        split.branch(lambda k, v: v < 0, name="x")


def test_merge_combines_two_streams_in_processing_order() -> None:
    app = new_app()
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=2)
    views = app.topic("views", key_type=str, value_type=str, partitions=2)
    events = app.topic("events", key_type=str, value_type=str, partitions=2)
    tagged_clicks = app.stream(clicks).map_values(lambda v: f"click:{v}")
    tagged_views = app.stream(views).map_values(lambda v: f"view:{v}")
    tagged_clicks.merge(tagged_views).to(events)

    with TopologyTestDriver(app) as driver:
        driver.pipe(clicks, "u1", "a", timestamp_ms=1)
        driver.pipe(views, "u2", "b", timestamp_ms=2)
        driver.pipe(clicks, "u2", "c", timestamp_ms=3)
        assert driver.read_output(events) == [
            ("u1", "click:a"),
            ("u2", "view:b"),
            ("u2", "click:c"),
        ]


def test_app_stream_of_several_topics_merges_them() -> None:
    app = new_app()
    a = app.topic("a", key_type=str, value_type=int, partitions=2)
    b = app.topic("b", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)
    app.stream([a, b]).map_values(lambda v: v * 10).to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe(a, "x", 1)
        driver.pipe(b, "y", 2)
        assert driver.read_output(out) == [("x", 10), ("y", 20)]


def test_to_chooses_the_topic_per_record_by_topic_or_by_name() -> None:
    app = new_app()
    src = app.topic("events", key_type=str, value_type=dict, partitions=2)
    eu = app.topic("events-eu", key_type=str, value_type=dict, partitions=2)
    us = app.topic("events-us", key_type=str, value_type=dict, partitions=2)
    seen_records: list[sk.Record] = []

    def choose(key: str, value: dict[str, str], record: sk.Record) -> sk.Topic | str:
        seen_records.append(record)
        return eu if value["region"] == "eu" else "events-us"  # a Topic, or a declared name

    app.stream(src).to(choose)
    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "a", {"region": "eu"}, timestamp_ms=5)
        driver.pipe(src, "b", {"region": "us"}, timestamp_ms=6)
        driver.pipe(src, "c", {"region": "eu"}, timestamp_ms=7)
        assert driver.read_output(eu) == [("a", {"region": "eu"}), ("c", {"region": "eu"})]
        assert driver.read_output(us) == [("b", {"region": "us"})]
    assert [r.timestamp for r in seen_records] == [5, 6, 7]


def test_to_a_chosen_topic_that_is_not_declared_fails_the_record_naming_it() -> None:
    app = new_app()
    src = app.topic("events", key_type=str, value_type=str)
    app.stream(src).to(lambda k, v, r: f"out-{v}")
    with TopologyTestDriver(app) as driver, pytest.raises(AgentError) as failure:
        driver.pipe(src, "a", "nowhere")
    assert "'out-nowhere'" in str(failure.value) and "not declared" in str(failure.value)
    assert (failure.value.topic, failure.value.offset) == ("events", 0)


def test_a_chooser_returning_another_apps_topic_fails_the_record() -> None:
    app = new_app()
    src = app.topic("events", key_type=str, value_type=str)
    foreign = sk.App("other").topic("events-out", key_type=str, value_type=str)
    app.topic("events-out", key_type=str, value_type=str)  # same name, not the same topic
    app.stream(src).to(lambda k, v, r: foreign)
    with TopologyTestDriver(app) as driver, pytest.raises(AgentError) as failure:
        driver.pipe(src, "a", "x")
    assert "'events-out'" in str(failure.value) and "not declared" in str(failure.value)


def test_to_an_undeclared_topic_object_is_refused_when_declared() -> None:
    app = new_app()
    other = sk.App("other").topic("elsewhere")
    src = app.topic("events", key_type=str, value_type=str)
    with pytest.raises(ConfigError, match="'elsewhere' was not declared"):
        app.stream(src).to(other)


# through and repartition ------------------------------------------------------------------


def test_through_writes_a_declared_topic_partitioned_by_the_new_key_and_reads_it_back() -> None:
    app = new_app()
    src = app.topic("orders", key_type=str, value_type=str, partitions=3)
    by_user = app.topic("orders-by-user", key_type=str, value_type=str, partitions=4)
    out = app.topic("out", key_type=str, value_type=str, partitions=4)
    (
        app.stream(src)
        .select_key(lambda k, v: v.split(":")[0])
        .through(by_user)
        .map_values(lambda v: v.upper())
        .to(out)
    )
    inputs = [("o1", "ann:1"), ("o2", "bob:2"), ("o3", "ann:3"), ("o4", "cid:4")]
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, inputs)
        through = driver.read_records(by_user)
        result = driver.read_output(out)
    assert [(r.key, r.value) for r in through] == [(v.split(":")[0], v) for _, v in inputs]
    for r in through:
        assert r.partition == partition_for(r.key.encode(), 4), r
    assert sorted(result) == sorted((v.split(":")[0], v.upper()) for _, v in inputs)


def test_repartition_uses_an_internal_topic_named_after_the_app_and_sized_as_asked() -> None:
    app = new_app("shop")
    src = app.topic("sales", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)
    (
        app.stream(src)
        .map(lambda k, v: (f"user-{v}", v))
        .repartition(name="by-user", partitions=5)
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        topic = repartition_topic(driver, "shop-by-user-repartition")
        assert topic.partitions == 5
        driver.pipe_many(src, [("a", i) for i in range(20)])
        moved = driver.read_records(topic)
        assert sorted(driver.read_output(out)) == sorted((f"user-{i}", i) for i in range(20))
    assert len(moved) == 20
    for r in moved:
        assert r.partition == partition_for(r.key.encode(), 5), r
    # Records spread over the topic's partitions by key, not all to one.
    assert len({r.partition for r in moved}) > 1


def test_repartition_without_partitions_is_sized_by_its_writer() -> None:
    app = new_app("shop")
    src = app.topic("sales", key_type=str, value_type=int, partitions=3)
    out = app.topic("out", key_type=str, value_type=int, partitions=3)
    app.stream(src).repartition(name="again").to(out)
    with TopologyTestDriver(app) as driver:
        assert repartition_topic(driver, "shop-again-repartition").partitions == 3
        driver.pipe(src, "k", 1)
        assert driver.read_output(out) == [("k", 1)]


# Grouped streams -------------------------------------------------------------------------


def test_group_by_counts_reduces_and_aggregates_through_a_repartition_topic() -> None:
    app = new_app("words")
    lines = app.topic("lines", key_type=str, value_type=str, partitions=2)
    counts = app.topic("counts", key_type=str, value_type=int, partitions=3)
    grouped = app.stream(lines).flat_map_values(str.split).group_by(lambda k, w: w, name="by-word")
    grouped.count(name="word-count").to_stream().to(counts)
    grouped.reduce(lambda a, b: a + "|" + b, name="word-concat")
    grouped.aggregate(lambda: [], lambda word, value, agg: [*agg, len(value)], name="word-lengths")

    with TopologyTestDriver(app) as driver:
        assert repartition_topic(driver, "words-by-word-repartition").partitions == 2
        driver.pipe(lines, "l1", "the cat the")
        driver.pipe(lines, "l2", "a cat")
        assert driver.read_output(counts) == [
            ("the", 1),
            ("cat", 1),
            ("the", 2),
            ("a", 1),
            ("cat", 2),
        ]
        assert driver.store("word-count") == {"the": 2, "cat": 2, "a": 1}
        assert driver.store("word-concat") == {"the": "the|the", "cat": "cat|cat", "a": "a"}
        assert driver.store("word-lengths") == {"the": [3, 3], "cat": [3, 3], "a": [1]}


def test_group_by_key_on_an_unchanged_key_needs_no_repartition_topic() -> None:
    app = new_app("g")
    src = app.topic("in", key_type=str, value_type=int, partitions=2)
    app.stream(src).filter(lambda k, v: v > 0).group_by_key().reduce(max, name="maxima")
    with TopologyTestDriver(app) as driver:
        assert driver.topology.repartition_topics == ()
        driver.pipe_many(src, [("a", 3), ("a", 9), ("b", -5), ("a", 4), ("b", 2)])
        assert driver.store("maxima") == {"a": 9, "b": 2}


def test_group_by_key_after_a_key_change_repartitions_so_each_key_meets_in_one_task() -> None:
    app = new_app("g")
    src = app.topic("in", key_type=str, value_type=int, partitions=4)
    totals = app.topic("totals", key_type=str, value_type=int, partitions=4)
    (
        app.stream(src)
        .select_key(lambda k, v: k.split("-")[0])
        .group_by_key(name="by-prefix")
        .aggregate(lambda: 0, lambda k, v, total: total + v, name="sums", value_type=int)
        .to_stream()
        .to(totals)
    )
    inputs = [(f"{p}-{i}", i) for i in range(12) for p in ("x", "y")]
    with TopologyTestDriver(app) as driver:
        assert [t.name for t in driver.topology.repartition_topics] == ["g-by-prefix-repartition"]
        driver.pipe_many(src, inputs)
        out = driver.read_output(totals)
        assert driver.store("sums") == {"x": 66, "y": 66}
    # Every partial sum was emitted, and each key's sums rise to its total.
    assert [v for k, v in out if k == "x"] == [sum(range(i + 1)) for i in range(12)]


def test_aggregations_drop_null_keys_and_values_counting_them() -> None:
    app = new_app("g")
    src = app.topic("in", key_type=str, value_type=Any, partitions=1)
    app.stream(src).group_by_key().count(name="n")
    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "a", 1)
        driver.pipe(src, None, 2)
        driver.pipe(src, "a", None)
        driver.pipe(src, "a", 3)
        assert driver.store("n") == {"a": 2}
    node = next(n.name for n in app.graph.nodes if n.stores)
    assert app.metrics.value("dropped_records", node=node, reason="null key") == 1
    assert app.metrics.value("dropped_records", node=node, reason="null value") == 1


def test_group_by_selector_returning_none_drops_and_counts_the_record() -> None:
    app = new_app("g")
    src = app.topic("in", key_type=str, value_type=dict, partitions=2)
    app.stream(src).group_by(lambda k, v: v.get("shop"), key_type=str).count(name="per-shop")
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("1", {"shop": "a"}), ("2", {}), ("3", {"shop": "a"})])
        assert driver.store("per-shop") == {"a": 2}
    dropped = sum(
        app.metrics.value("dropped_records", node=n.name, reason="null key")
        for n in app.graph.nodes
    )
    assert dropped == 1


# KTable from a topic --------------------------------------------------------------------


def test_ktable_keeps_the_latest_value_per_key_and_deletes_on_tombstones() -> None:
    app = new_app("tbl")
    users = app.topic("users", key_type=str, value_type=dict, partitions=2)
    changes = app.topic("user-changes", key_type=str, value_type=dict, partitions=2)
    app.ktable(users).to_stream().to(changes)

    with TopologyTestDriver(app) as driver:
        driver.pipe(users, "ann", {"city": "oslo"})
        driver.pipe(users, "bob", {"city": "rome"})
        driver.pipe(users, "ann", {"city": "lima"})
        driver.pipe(users, "bob", None)  # tombstone: bob is deleted
        # A tombstone of an unknown key changes no row, yet goes on downstream, as
        # Kafka's KTableSource passes every record on (KTableSourceTest.testKTable).
        driver.pipe(users, "zed", None)
        assert driver.store("users") == {"ann": {"city": "lima"}}
        assert driver.read_output(changes) == [
            ("ann", {"city": "oslo"}),
            ("bob", {"city": "rome"}),
            ("ann", {"city": "lima"}),
            ("bob", None),
            ("zed", None),
        ]
        # The source topic is the store's changelog: no second topic is written.
        assert driver.topology.changelog_topics() == []


def test_ktable_store_name_can_be_chosen_and_a_topic_is_read_once() -> None:
    app = new_app("tbl")
    users = app.topic("users", key_type=str, value_type=str)
    app.ktable(users, name="user-table")
    with pytest.raises(ConfigError, match="already read"):
        app.ktable(users, name="again")
    with TopologyTestDriver(app) as driver:
        driver.pipe(users, "a", "x")
        assert driver.store("user-table") == {"a": "x"}


@pytest.mark.parametrize("named", [False, True])
def test_ktable_filter_map_values_and_to_stream_emit_changes_and_deletions(named: bool) -> None:
    app = new_app("tbl")
    accounts = app.topic("accounts", key_type=str, value_type=int, partitions=2)
    rich = app.topic("rich", key_type=str, value_type=str, partitions=2)
    table = app.ktable(accounts, name="accounts" if named else None)
    (
        table.filter(lambda k, balance: balance >= 100)
        .map_values(lambda balance: f"{balance // 100} hundred")
        .to_stream()
        .to(rich)
    )
    with TopologyTestDriver(app) as driver:
        # Never passes: a table with a store named by the app sends old values, so
        # its filter knows nothing changed downstream; one without does not, and
        # passes the deletion on (Kafka's KTableFilter, module dsl/old_values.py).
        driver.pipe(accounts, "ann", 50)
        driver.pipe(accounts, "bob", 250)
        driver.pipe(accounts, "bob", 120)
        driver.pipe(accounts, "bob", 10)  # stops passing: a deletion downstream
        driver.pipe(accounts, "ann", 300)
        driver.pipe(accounts, "ann", None)  # deleted upstream: a deletion downstream
        assert driver.read_output(rich) == [("ann", None)] * (not named) + [
            ("bob", "2 hundred"),
            ("bob", "1 hundred"),
            ("bob", None),
            ("ann", "3 hundred"),
            ("ann", None),
        ]
        assert driver.store("accounts") == {"bob": 10}


def test_ktable_filter_not_keeps_the_rows_the_predicate_rejects() -> None:
    app = new_app("tbl")
    flags = app.topic("flags", key_type=str, value_type=bool)
    off = app.topic("off", key_type=str, value_type=bool)
    app.ktable(flags).filter_not(lambda k, on: on).to_stream().to(off)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(flags, [("a", True), ("b", False), ("a", False)])
        # ("a", True) is rejected: a deletion, as the table sends no old values.
        assert driver.read_output(off) == [("a", None), ("b", False), ("a", False)]


# KTable from a stream ----------------------------------------------------------------------


def test_to_table_keeps_the_latest_value_per_key_in_a_store_with_its_own_changelog() -> None:
    app = new_app("tt")
    src = app.topic("in", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)
    app.stream(src).to_table(name="latest").to_stream().to(out)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", 1), ("b", 2), ("a", 3), ("b", None), ("z", None)])
        driver.pipe(src, None, 5)  # no key, no row: dropped and counted
        assert driver.store("latest") == {"a": 3}
        assert driver.read_output(out) == [("a", 1), ("b", 2), ("a", 3), ("b", None), ("z", None)]
        # Unlike app.ktable's, the stream's topic is no changelog: the store has its own.
        changelog = repartition_topic(driver, "tt-latest-changelog")
        assert [(r.key, r.value) for r in driver.read_records(changelog)] == [
            ("a", (1, 0)),
            ("b", (2, 0)),
            ("a", (3, 0)),
            ("b", None),
        ]
    node = next(n.name for n in app.graph.nodes if n.name.startswith("KSTREAM-TOTABLE"))
    assert app.metrics.value("dropped_records", node=node, reason="null key") == 1


@pytest.mark.parametrize("named", [False, True])
def test_to_table_filter_passes_deletions_on_unless_the_table_is_named(named: bool) -> None:
    """Kafka's toTable() without Materialized.as keeps no store, so its filter cannot
    know a rejected key never passed (KStreamImplTest.shouldNotMaterializedKTableFromKStream)."""
    app = new_app("tt")
    src = app.topic("in", key_type=str, value_type=int)
    rich = app.topic("rich", key_type=str, value_type=int)
    table = app.stream(src).to_table(name="balances" if named else None)
    table.filter(lambda k, balance: balance >= 100).to_stream().to(rich)
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("ann", 50), ("bob", 250), ("bob", 10)])
        assert driver.read_output(rich) == [("ann", None)] * (not named) + [
            ("bob", 250),
            ("bob", None),
        ]


def test_to_table_suppressed_and_outer_joined_like_any_table() -> None:
    app = new_app("tt")
    left_in, right_in = (app.topic(n, key_type=str, value_type=str) for n in ("l", "r"))
    quiet, joined = (app.topic(n, key_type=str, value_type=str) for n in ("quiet", "joined"))
    left = app.stream(left_in).to_table()
    right = app.stream(right_in).map_values(str.upper).to_table()
    limit = sk.Suppressed.until_time_limit(10, sk.BufferConfig.unbounded())
    left.suppress(limit).to_stream().to(quiet)
    left.outer_join(right, lambda a, b: f"{a}+{b}").to_stream().to(joined)
    with TopologyTestDriver(app) as driver:
        driver.pipe(left_in, "k", "a", timestamp_ms=0)
        driver.pipe(left_in, "k", "b", timestamp_ms=5)
        driver.pipe(right_in, "k", "x", timestamp_ms=6)
        driver.pipe(left_in, "k", None, timestamp_ms=7)
        assert driver.read_output(quiet) == []  # held: stream time has not moved 10 s on
        driver.pipe(left_in, "q", "c", timestamp_ms=10_000)  # moves the buffer's time
        assert driver.read_output(quiet) == [("k", None)]  # the latest of k, once
        assert driver.read_output(joined) == [
            ("k", "a+None"),
            ("k", "b+None"),
            ("k", "b+X"),
            ("k", "None+X"),
            ("q", "c+None"),
        ]


async def test_to_table_is_restored_from_its_changelog_by_a_new_worker(
    memory_url: str, tmp_path: Path
) -> None:
    def build(data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic, sk.Topic]:
        app = sk.App("tt-restore", broker=memory_url, data_dir=data_dir, commit_interval_s=0.05)
        prices = app.topic("prices", key_type=str, value_type=int, partitions=2)
        changes = app.topic("price-changes", key_type=str, value_type=int, partitions=2)
        orders = app.topic("orders", key_type=str, value_type=int, partitions=2)
        priced = app.topic("priced", key_type=str, value_type=int, partitions=2)
        table = app.stream(prices).map(lambda k, v: (k.lower(), v)).to_table(name="price")
        table.to_stream().to(changes)
        app.stream(orders).join(table, lambda qty, price: qty * price).to(priced)
        return app, prices, changes, orders, priced

    app, prices, changes, _, _ = build(tmp_path / "one")
    await app.send(prices, key="TEA", value=3)
    await app.send(prices, key="COFFEE", value=5)
    async with running(app):
        await wait_for(lambda: len(read(app, changes)) == 2, what="both prices in the table")
    # A worker with no local state: the table comes back from its changelog only.
    app2, _, changes2, orders2, priced2 = build(tmp_path / "two")
    async with running(app2):
        await app2.send(orders2, key="coffee", value=4)
        await app2.send(orders2, key="tea", value=2)
        await wait_for(lambda: len(read(app2, priced2)) == 2, what="two joined orders")
    assert sorted(read(app2, priced2)) == [("coffee", 20), ("tea", 6)]
    assert len(read(app2, changes2)) == 2  # the prices were not read again


def people_app(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("people", broker=url, data_dir=data_dir, commit_interval_s=0.05)
    people = app.topic("people", key_type=str, value_type=str, partitions=2)
    per_city = app.topic("per-city", key_type=str, value_type=int, partitions=2)
    (
        app.ktable(people)
        .group_by(lambda name, city: (city, name), key_type=str, name="by-city")
        .count(name="city-count")
        .to_stream()
        .to(per_city)
    )
    return app, people, per_city


async def test_ktable_over_records_written_before_the_worker_ran_sees_true_old_values(
    memory_url: str, tmp_path: Path
) -> None:
    """Records not yet processed are input, not state: a worker that restored them into
    the table first would pass each one its own value as the old one, and the count
    of the city a person left would never go down."""
    app, people, per_city = people_app(memory_url, tmp_path)
    for name in ("ann", "bob", "cid", "dan"):
        await app.send(people, key=name, value="oslo")  # before any worker ran
    async with running(app):
        await wait_for(lambda: ("oslo", 4) in read(app, per_city), what="four in oslo")
    assert dict(read(app, per_city)) == {"oslo": 4}
    # Moves while no worker runs, then a new worker (same files, same broker).
    app2, people2, per_city2 = people_app(memory_url, tmp_path)
    await app2.send(people2, key="ann", value="rome")
    await app2.send(people2, key="bob", value="rome")
    await app2.send(people2, key="cid", value=None)
    async with running(app2):
        await wait_for(
            lambda: dict(read(app2, per_city2)) == {"oslo": 1, "rome": 2},
            what="counts after the moves",
        )


# KTable.group_by + KGroupedTable ----------------------------------------------------------


def test_grouped_table_count_moves_rows_between_groups() -> None:
    app = new_app("tbl")
    people = app.topic("people", key_type=str, value_type=str, partitions=2)
    per_city = app.topic("per-city", key_type=str, value_type=int, partitions=2)
    (
        app.ktable(people)
        .group_by(lambda name, city: (city, name), key_type=str)
        .count(name="city-count")
        .to_stream()
        .to(per_city)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe(people, "ann", "oslo")
        driver.pipe(people, "bob", "oslo")
        driver.pipe(people, "ann", "rome")  # leaves oslo, joins rome
        driver.pipe(people, "bob", None)  # leaves oslo
        assert driver.store("city-count") == {"oslo": 0, "rome": 1}
        assert driver.read_output(per_city) == [
            ("oslo", 1),
            ("oslo", 2),
            ("oslo", 1),
            ("rome", 1),
            ("oslo", 0),
        ]


def test_grouped_table_aggregate_and_reduce_use_adder_and_subtractor() -> None:
    app = new_app("tbl")
    stock = app.topic("stock", key_type=str, value_type=dict, partitions=3)
    grouped = app.ktable(stock).group_by(
        lambda item, row: (row["shop"], row["qty"]), key_type=str, name="by-shop"
    )
    grouped.aggregate(
        lambda: 0,
        lambda shop, qty, total: total + qty,
        lambda shop, qty, total: total - qty,
        name="shop-total",
        value_type=int,
    )
    grouped.reduce(lambda a, b: a + b, lambda a, b: a - b, name="shop-sum")

    with TopologyTestDriver(app) as driver:
        driver.pipe(stock, "apple", {"shop": "north", "qty": 5})
        driver.pipe(stock, "pear", {"shop": "north", "qty": 3})
        driver.pipe(stock, "plum", {"shop": "south", "qty": 7})
        driver.pipe(stock, "apple", {"shop": "north", "qty": 1})  # 5 -> 1 in north
        driver.pipe(stock, "pear", {"shop": "south", "qty": 3})  # moves north -> south
        driver.pipe(stock, "plum", None)  # leaves south
        expected = {"north": 1, "south": 3}
        assert driver.store("shop-total") == expected
        assert driver.store("shop-sum") == expected


# Error policies for operators that raise -------------------------------------------------


def failing_app(policy: str) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = new_app("err")
    src = app.topic("in", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)
    app.stream(src, on_error=policy).map_values(lambda v: 100 // v).to(out)
    return app, src, out


def errors_counted(app: sk.App, policy: str) -> float:
    return sum(
        app.metrics.value("agent_errors", agent=n.name, policy=policy) for n in app.graph.nodes
    )


def test_on_error_fail_stops_at_the_record_and_names_where_it_is() -> None:
    app, src, out = failing_app("fail")
    with TopologyTestDriver(app) as driver:
        driver.pipe(src, "a", 5)
        with pytest.raises(AgentError) as failure:
            driver.pipe(src, "a", 0)
        assert driver.read_output(out) == [("a", 20)]
    error = failure.value
    assert "ZeroDivisionError" in str(error)
    assert (error.topic, error.partition, error.offset) == (
        "in",
        partition_for(b"a", 2),
        1,
    )
    assert errors_counted(app, "fail") == 1
    # The operator whose function raised is named, not the graph's source.
    mapper = next(n.name for n in app.graph.nodes if n.name.startswith("KSTREAM-MAPVALUES"))
    assert f"agent {mapper}" in str(error)
    assert app.metrics.value("agent_errors", agent=mapper, policy="fail") == 1


def test_on_error_skip_logs_counts_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    app, src, out = failing_app("skip")
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", 5), ("b", 0), ("c", 50)])
        assert driver.read_output(out) == [("a", 20), ("c", 2)]
    assert errors_counted(app, "skip") == 1
    assert any(
        "skipped in[" in r.getMessage() and "ZeroDivisionError" in r.getMessage()
        for r in caplog.records
    )


def test_on_error_dead_letter_sends_the_input_bytes_with_the_reason_in_headers() -> None:
    app, src, out = failing_app("dead_letter")
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", 5), ("b", 0), ("c", 50)])
        assert driver.read_output(out) == [("a", 20), ("c", 2)]
        dead = driver.read_records("err-dlq")
    assert [(r.key, r.value) for r in dead] == [(b"b", b"0")]
    headers = dict(dead[0].headers)
    assert b"ZeroDivisionError" in headers["streamkit.error.reason"]
    assert headers["streamkit.error.topic"] == b"in"
    partition = partition_for(b"b", 2)
    earlier = sum(partition_for(k, 2) == partition for k in (b"a",))
    assert headers["streamkit.error.partition"] == b"%d" % partition
    assert headers["streamkit.error.offset"] == b"%d" % earlier
    assert errors_counted(app, "dead_letter") == 1


def test_on_error_applies_after_a_repartition_too() -> None:
    app = new_app("err")
    src = app.topic("in", key_type=str, value_type=str, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)
    (
        app.stream(src, on_error="skip")
        .group_by(lambda k, v: v, key_type=str)
        .aggregate(lambda: 0, lambda k, v, n: n + int(v), name="sums", value_type=int)
        .to_stream()
        .to(out)
    )
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(src, [("a", "1"), ("b", "x"), ("c", "1")])
        assert driver.read_output(out) == [("1", 1), ("1", 2)]
        assert driver.store("sums") == {"1": 2}
    assert errors_counted(app, "skip") == 1


# streamkit topology ---------------------------------------------------------------------


def test_topology_command_shows_the_dsl_nodes_and_internal_topics() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamkit", "topology", "sk_dsl_topology:app"],
        cwd=APPS,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in [
        "Sub-topology: 0 (tasks: 0_0, 0_1, 0_2)",
        "Source: KSTREAM-SOURCE-0000000000 (topics: [page-views])",
        "Processor: KSTREAM-FILTER-0000000001 (stores: [])",
        "--> KSTREAM-KEY-SELECT-0000000002",
        "<-- KSTREAM-SOURCE-0000000000",
        "Sink: by-page-repartition-sink (topic: dsl-topology-by-page-repartition)",
        "Sub-topology: 1 (tasks: 1_0, 1_1, 1_2)",
        "Source: by-page-repartition-source (topics: [dsl-topology-by-page-repartition])",
        "(stores: [views-per-page])",
        "Sink: KSTREAM-SINK-",
        "(topic: views-per-page)",
        "Sink: routed (topic: chosen per record)",
    ]:
        assert expected in out, f"{expected!r} not in\n{out}"
