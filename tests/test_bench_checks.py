"""The benchmark's own arithmetic: a run whose outputs are not its inputs' fails rather
than report a figure, commit markers are not records, ramps and verdicts are computed
as the report says, and the ceilings' state layers read what they wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import verify
from benchmarks.ceilings import Store, open_db
from benchmarks.kafka import BenchError, Observer, records_below
from benchmarks.report import verdict
from benchmarks.runs import ramp

# Two partitions; each transaction left a marker after its records (offsets 3 and 7
# in partition 0, 2 in partition 1).
OFFSETS = {0: [0, 1, 2, 4, 5, 6], 1: [0, 1]}


def test_records_below_leaves_markers_out() -> None:
    assert records_below({0: 4, 1: 3}, OFFSETS) == 5
    assert records_below({0: 8, 1: 3}, OFFSETS) == 8


def test_recount_turns_offsets_into_records() -> None:
    observer = Observer("kafka://unused:1", "out", 2, committed=True)
    for at, ends in ((1.0, {0: 4, 1: 0}), (1.1, {0: 4, 1: 3}), (1.2, {0: 8, 1: 3})):
        observer.ends_seen.append((at, ends))
        observer.marks.append((at, sum(ends.values())))
    observer.recount(OFFSETS)
    assert observer.marks == [(1.0, 3), (1.1, 5), (1.2, 8)]
    assert observer.reached_at(8) == 1.2


def _payment(user: str, amount: float, ts: float) -> bytes:
    return json.dumps({"user_id": user, "amount": amount, "timestamp": ts}).encode()


INPUTS = [
    (b"a", _payment("a", 1.5, 1.0)),
    (b"b", _payment("b", 2.5, 2.0)),
    (b"a", _payment("a", 3.5, 12.0)),  # the next 10 s window
    (b"a", _payment("a", 4.5, 13.0)),
]


def _outputs(pairs: list[tuple[bytes, object]]) -> dict[int, list[tuple[int, bytes, bytes]]]:
    return {0: [(i, key, json.dumps(value).encode()) for i, (key, value) in enumerate(pairs)]}


def test_passthrough_outputs_must_be_the_inputs() -> None:
    expected = verify.passthrough(INPUTS)
    forwarded = [(k, json.loads(v)) for k, v in INPUTS]
    assert verify.check("ok", _outputs(forwarded), expected) == {
        "outputs_checked": 4,
        "duplicates": 0,
    }
    with pytest.raises(BenchError, match="5 outputs for 4 inputs"):
        verify.check("dup", _outputs([*forwarded, forwarded[0]]), expected)
    with pytest.raises(BenchError, match="keys without outputs"):
        verify.check("lost", _outputs([p for p in forwarded if p[0] == b"a"]), expected)
    with pytest.raises(BenchError, match="first difference"):
        verify.check(
            "order", _outputs([forwarded[2], forwarded[1], forwarded[0], forwarded[3]]), expected
        )


def test_a_replay_is_counted_where_a_rebalance_allows_it() -> None:
    forwarded = [(k, json.loads(v)) for k, v in INPUTS]
    replayed = [*forwarded[:3], forwarded[2], forwarded[3]]
    checked = verify.check(
        "scaling", _outputs(replayed), verify.passthrough(INPUTS), replays_allowed=True
    )
    assert checked == {"outputs_checked": 5, "duplicates": 1}
    with pytest.raises(BenchError, match="key b'a'"):
        verify.check(
            "scaling", _outputs(forwarded[:3]), verify.passthrough(INPUTS), replays_allowed=True
        )


def test_counts_restart_in_each_window_and_run_on_without_windows() -> None:
    assert verify.running_counts(INPUTS) == {b"a": [1, 2, 3], b"b": [1]}
    assert verify.windowed_counts(INPUTS) == {b"a": [1, 1, 2], b"b": [1]}
    with pytest.raises(BenchError, match=r"key b'a'.*\(got, expected\) \(2, 1\)"):
        verify.check(
            "windowed",
            _outputs([(b"a", 1), (b"b", 1), (b"a", 2), (b"a", 3)]),
            verify.windowed_counts(INPUTS),
        )


def test_join_outputs_carry_the_users_tier() -> None:
    expected = verify.joined(INPUTS[:1])
    assert expected == {b"a": [{"user_id": "a", "amount": 1.5, "tier": "gold"}]}
    with pytest.raises(BenchError, match="'tier': None"):
        verify.check(
            "join", _outputs([(b"a", {"user_id": "a", "amount": 1.5, "tier": None})]), expected
        )


def test_ramp_is_the_time_until_full_speed() -> None:
    # 10,000 records/s for 0.5 s, then 100,000 records/s, observed every 20 ms.
    marks, count, t = [], 0, 0.0
    while count < 200_000:
        t = round(t + 0.02, 2)
        count += 200 if t <= 0.5 else 2_000
        marks.append((t, count))
    figures = ramp(marks, 200_000)
    assert figures["full_speed_records_per_s"] == pytest.approx(100_000)
    # From the first mark, full speed comes 0.5 s later: the first 0.2 s window at
    # 0.8 of it starts 0.46 s after the first output.
    assert 0.4 <= figures["ramp_s"] <= 0.5
    assert figures["first_half_s_records_per_s"] < 25_000


@pytest.mark.parametrize(
    ("value", "op", "expected"),
    [
        ({"median": 0.9, "min": 0.86, "max": 0.95}, ">=", "met"),
        ({"median": 0.8, "min": 0.7, "max": 0.84}, ">=", "missed"),
        ({"median": 0.86, "min": 0.82, "max": 0.9}, ">=", "within noise"),
        ({"median": 0.84, "min": 0.82, "max": 0.9}, ">=", "within noise"),
        (120.0, "<", "met"),
        (260.0, "<", "missed"),
        (None, "<", None),
    ],
)
def test_a_target_inside_the_spread_is_within_noise(
    value: object, op: str, expected: str | None
) -> None:
    limit = 0.85 if isinstance(value, dict) else 250.0
    assert verdict(value, limit, op) == expected


def test_ceiling_store_reads_misses_once_and_keeps_its_bound(tmp_path: Path) -> None:
    store = Store(open_db(tmp_path / "s.sqlite"), 3, 0, lambda n: b"%d" % n, int)
    store.dirty.update({b"a": 5, b"b": 7})
    store.persist(store.start_commit(), 10)
    store.clean.clear()  # forget: the next reads go to the file
    store.prefetch([b"a", b"b", b"c", b"a"], lambda _k: False)
    assert store.clean == {b"a": 5, b"b": 7, b"c": 0}
    assert store.sqlite_reads == 3
    store.prefetch([b"a", b"c"], lambda _k: False)
    assert store.sqlite_reads == 3  # known now
    store.prefetch([b"d", b"e"], lambda k: k == b"e")
    # Over the bound of 3: the cache was cleared whole before the new keys went in.
    assert store.clean == {b"d": 0, b"e": 0}
    assert store.sqlite_reads == 4
    assert store.db.execute("SELECT value FROM meta WHERE name='offset'").fetchone() == (10,)
