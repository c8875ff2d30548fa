"""Kafka Streams conformance: KTable-KTable joins on the key.

Ported from org.apache.kafka.streams.kstream.internals.KTableKTableInnerJoinTest
and KTableKTableLeftJoinTest (testJoin; KTableKTableOuterJoinTest.testJoin is in
test_conformance_table_source.py), and the three's testSendingOldValue(s). Kafka's
tests run one script of inputs; a result carries the larger of the two rows'
timestamps, and a deletion that removes a result is a tombstone stamped the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conformance import records, string_init, tostring_adder, tostring_joiner, tostring_remover

import streamkit as sk
from streamkit.testing import TopologyTestDriver

KEYS = (0, 1, 2, 3)
Step = tuple[str, list[tuple[int | None, str | None, int]]]

# The inputs of Kafka's doTestJoin / testJoin, step by step (topic, records).
SCRIPT: list[Step] = [
    ("topic1", [(0, "X0", 5), (1, "X1", 6), (None, "SomeVal", 42)]),
    ("topic2", [(0, "Y0", 0), (1, "Y1", 10), (None, "AnotherVal", 73)]),
    ("topic1", [(k, f"XX{k}", 7) for k in KEYS]),
    ("topic2", [(k, f"YY{k}", k * 5) for k in KEYS]),
    ("topic1", [(k, f"XXX{k}", 6) for k in KEYS]),
    ("topic2", [(0, None, 5), (1, None, 7)]),
    ("topic1", [(k, f"XXXX{k}", 13) for k in KEYS]),
    ("topic1", [(0, None, 0), (1, None, 42), (2, None, 5), (3, None, 20)]),
]


def _run(how: str, expected: list[list[tuple[int, str | None, int]]]) -> None:
    app = sk.App(f"ktable-{how}-join")
    topic1, topic2, output = (
        app.topic(name, key_type=int, value_type=str) for name in ("topic1", "topic2", "output")
    )
    table1, table2 = app.ktable(topic1), app.ktable(topic2)
    method = {"inner": "join", "left": "left_join", "outer": "outer_join"}[how]
    join: Callable[..., sk.KTable] = getattr(table1, method)
    join(table2, tostring_joiner).to_stream().to(output)
    topics = {"topic1": topic1, "topic2": topic2}
    with TopologyTestDriver(app) as driver:
        for (topic, inputs), outputs in zip(SCRIPT, expected, strict=True):
            for key, value, ts in inputs:
                driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            assert records(driver, output) == outputs


def test_KTableKTableInnerJoinTest_testJoin() -> None:
    _run(
        "inner",
        [
            [],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10)],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
            [(0, None, 6), (1, None, 7)],
            [(2, "XXXX2+YY2", 13), (3, "XXXX3+YY3", 15)],
            [(2, None, 10), (3, None, 20)],
        ],
    )


def test_KTableKTableLeftJoinTest_testJoin() -> None:
    _run(
        "left",
        [
            [(0, "X0+null", 5), (1, "X1+null", 6)],
            [(0, "X0+Y0", 5), (1, "X1+Y1", 10)],
            [(0, "XX0+Y0", 7), (1, "XX1+Y1", 10), (2, "XX2+null", 7), (3, "XX3+null", 7)],
            [(0, "XX0+YY0", 7), (1, "XX1+YY1", 7), (2, "XX2+YY2", 10), (3, "XX3+YY3", 15)],
            [(0, "XXX0+YY0", 6), (1, "XXX1+YY1", 6), (2, "XXX2+YY2", 10), (3, "XXX3+YY3", 15)],
            [(0, "XXX0+null", 6), (1, "XXX1+null", 7)],
            [
                (0, "XXXX0+null", 13),
                (1, "XXXX1+null", 13),
                (2, "XXXX2+YY2", 13),
                (3, "XXXX3+YY3", 15),
            ],
            [(0, None, 0), (1, None, 42), (2, None, 10), (3, None, 20)],
        ],
    )


# testSendingOldValue(s): Kafka checks each result's Change(new, old) with a mock
# processor. Here the old values are observed where the DSL consumes them: a
# group_by on the join's own key, aggregated with Kafka's TOSTRING_ADDER and
# TOSTRING_REMOVER, subtracts each old value and adds each new one: one update per
# Change, as the key stays the same (Kafka's KTableRepartitionMap since KIP-904).
Change = tuple[int, str | None, str | None, int]  # key, new, old, timestamp


def _old_values_seen(changes: list[list[Change]]) -> list[list[tuple[int, str, int]]]:
    """The aggregate's updates that Kafka's Changes give, step by step; an update
    keeps the later of the record's and the aggregate's timestamps (KTableAggregate)."""
    aggregates: dict[int, tuple[str, int]] = {}
    steps = []
    for step in changes:
        out = []
        for key, new, old, ts in step:
            aggregate, last = aggregates.get(key, ("0", ts))
            aggregate += "" if old is None else f"-{old}"
            aggregates[key] = (aggregate + ("" if new is None else f"+{new}"), max(ts, last))
            out.append((key, *aggregates[key]))
        steps.append(out)
    return steps


def _run_old_values(how: str, changes: list[list[Change]]) -> None:
    app = sk.App(f"ktable-{how}-join-old-values")
    topic1, topic2 = (app.topic(n, key_type=int, value_type=str) for n in ("topic1", "topic2"))
    output = app.topic("output", key_type=int, value_type=str)
    method = {"inner": "join", "left": "left_join", "outer": "outer_join"}[how]
    joined = getattr(app.ktable(topic1), method)(app.ktable(topic2), tostring_joiner)
    grouped = joined.group_by(lambda k, v: (k, v), key_type=int, value_type=str)
    grouped.aggregate(string_init, tostring_adder, tostring_remover, value_type=str).to_stream().to(
        output
    )
    topics = {"topic1": topic1, "topic2": topic2}
    with TopologyTestDriver(app) as driver:
        for number, ((topic, inputs), outputs) in enumerate(
            zip(SCRIPT, _old_values_seen(changes), strict=True)
        ):
            for key, value, ts in inputs:
                driver.pipe(topics[topic], key, value, timestamp_ms=ts)
            assert records(driver, output) == outputs, f"step {number}"


def _each_key(new: str, olds: tuple[str | None, ...], timestamps: tuple[int, ...]) -> list[Change]:
    """A Change for each of the four keys: `new` formatted with the key."""
    return [
        (k, new.format(k=k), old, ts) for k, old, ts in zip(KEYS, olds, timestamps, strict=True)
    ]


# The step every join shares: all four keys XXX over XX, at 6 or the right row's time.
XXX_OVER_XX = _each_key("XXX{k}+YY{k}", tuple(f"XX{k}+YY{k}" for k in KEYS), (6, 6, 10, 15))


def test_KTableKTableInnerJoinTest_testSendingOldValues() -> None:
    _run_old_values(
        "inner",
        [
            [],
            [(0, "X0+Y0", None, 5), (1, "X1+Y1", None, 10)],
            [(0, "XX0+Y0", "X0+Y0", 7), (1, "XX1+Y1", "X1+Y1", 10)],
            _each_key("XX{k}+YY{k}", ("XX0+Y0", "XX1+Y1", None, None), (7, 7, 10, 15)),
            XXX_OVER_XX,
            [(0, None, "XXX0+YY0", 6), (1, None, "XXX1+YY1", 7)],
            [(2, "XXXX2+YY2", "XXX2+YY2", 13), (3, "XXXX3+YY3", "XXX3+YY3", 15)],
            [(2, None, "XXXX2+YY2", 10), (3, None, "XXXX3+YY3", 20)],
        ],
    )


def _left_and_outer_changes(last: list[Change]) -> list[list[Change]]:
    """Left and outer joins' Changes differ only at the last step."""
    return [
        [(0, "X0+null", None, 5), (1, "X1+null", None, 6)],
        [(0, "X0+Y0", "X0+null", 5), (1, "X1+Y1", "X1+null", 10)],
        [
            (0, "XX0+Y0", "X0+Y0", 7),
            (1, "XX1+Y1", "X1+Y1", 10),
            (2, "XX2+null", None, 7),
            (3, "XX3+null", None, 7),
        ],
        _each_key("XX{k}+YY{k}", ("XX0+Y0", "XX1+Y1", "XX2+null", "XX3+null"), (7, 7, 10, 15)),
        XXX_OVER_XX,
        [(0, "XXX0+null", "XXX0+YY0", 6), (1, "XXX1+null", "XXX1+YY1", 7)],
        [
            (0, "XXXX0+null", "XXX0+null", 13),
            (1, "XXXX1+null", "XXX1+null", 13),
            (2, "XXXX2+YY2", "XXX2+YY2", 13),
            (3, "XXXX3+YY3", "XXX3+YY3", 15),
        ],
        last,
    ]


@pytest.mark.parametrize(
    "how", ["left", "outer"], ids=["KTableKTableLeftJoinTest", "KTableKTableOuterJoinTest"]
)
def test_KTableKTableLeftOrOuterJoinTest_testSendingOldValue(how: str) -> None:
    """<class>.testSendingOldValue: at the end the left rows are deleted; an outer join
    keeps the right rows of keys 2 and 3 (null+YY2, null+YY3), a left join drops them."""
    kept = ("null+YY2", "null+YY3") if how == "outer" else (None, None)
    olds = ("XXXX0+null", "XXXX1+null", "XXXX2+YY2", "XXXX3+YY3")
    news = (None, None, *kept)
    last = list(zip(KEYS, news, olds, (0, 42, 10, 20), strict=True))
    _run_old_values(how, _left_and_outer_changes(last))
