"""What a run's outputs must be, and the check that fails the run when they are not.

Every throughput run, streamkit's and its ceiling's alike, is read back after its
timed window and checked against what its inputs say it must have written: each
key's outputs, in order, parsed as JSON. A figure for a run that lost, duplicated,
reordered or miscounted records is worthless, so a difference raises `BenchError`
with what differs. Only a run with a rebalance in it (two workers) may replay
records, as at-least-once allows: there each replayed output is counted and shown,
and the outputs left once each replay is taken out must still be the expected ones.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .kafka import BenchError

Inputs = Sequence[tuple[bytes, bytes]]
# Per key, the output values (parsed JSON) in the order they must come.
Expected = dict[bytes, list[Any]]
# Per partition, (offset, key, value) as read back.
Outputs = Mapping[int, Sequence[tuple[int, bytes | None, bytes | None]]]

WINDOW_MS = 10_000  # benchmarks/apps/windowed_count.py


def passthrough(inputs: Inputs) -> Expected:
    """Each key's input values in input order: what a passthrough emits."""
    out: Expected = {}
    for key, value in inputs:
        out.setdefault(key, []).append(json.loads(value))
    return out


def running_counts(inputs: Inputs) -> Expected:
    """Each key's running count 1, 2, ... n: what the count emits."""
    totals = Counter(key for key, _ in inputs)
    return {key: list(range(1, total + 1)) for key, total in totals.items()}


def windowed_counts(inputs: Inputs) -> Expected:
    """Each key's running count within its 10 s tumbling window of the payment's own
    time, restarting at 1 in each window (the data has no late records)."""
    out: Expected = {}
    counts: Counter[tuple[bytes, int]] = Counter()
    for key, value in inputs:
        ts = int(json.loads(value)["timestamp"] * 1000)
        window = (key, ts - ts % WINDOW_MS)
        counts[window] += 1
        out.setdefault(key, []).append(counts[window])
    return out


def joined(inputs: Inputs) -> Expected:
    """Each payment with its user's tier: every user has a row, all "gold"."""
    out: Expected = {}
    for key, value in inputs:
        payment = json.loads(value)
        out.setdefault(key, []).append(
            {"user_id": payment["user_id"], "amount": payment["amount"], "tier": "gold"}
        )
    return out


EXPECTED: dict[str, Callable[[Inputs], Expected]] = {
    "passthrough": passthrough,
    "count": running_counts,
    "windowed_count": windowed_counts,
    "join": joined,
}


def check(
    label: str, outputs: Outputs, expected: Expected, *, replays_allowed: bool = False
) -> dict[str, int]:
    """Raise BenchError unless each key's outputs are `expected[key]`, every input's
    output once. With `replays_allowed`, an output repeated (the same bytes again for
    the same key: a record processed again after a rebalance) is counted as a
    duplicate and left out first. Returns the outputs read and the duplicates."""
    raw: dict[bytes | None, list[bytes | None]] = {}
    total = 0
    for records in outputs.values():
        for _, key, value in records:
            raw.setdefault(key, []).append(value)
            total += 1
    duplicates = 0
    if replays_allowed:
        for key, values in raw.items():
            unique = list(dict.fromkeys(values))
            duplicates += len(values) - len(unique)
            raw[key] = unique
    got = {
        key: [None if v is None else json.loads(v) for v in values] for key, values in raw.items()
    }
    if got != expected:
        differences = _differences(got, expected, total)
        raise BenchError(f"{label}: the outputs are not what the inputs make: {differences}")
    return {"outputs_checked": total, "duplicates": duplicates}


def _differences(got: dict[Any, list[Any]], expected: Expected, total: int) -> str:
    problems = []
    inputs = sum(len(v) for v in expected.values())
    if total != inputs:
        problems.append(f"{total:,} outputs for {inputs:,} inputs")
    missing = expected.keys() - got.keys()
    if missing:
        problems.append(f"{len(missing):,} keys without outputs, e.g. {min(missing)!r}")
    unknown = got.keys() - expected.keys()
    if unknown:
        problems.append(
            f"{len(unknown):,} keys that were never input, e.g. {_first(unknown)!r:.80}"
        )
    wrong = sorted(k for k in expected.keys() & got.keys() if got[k] != expected[k])
    for key in wrong[:3]:
        pairs = itertools.zip_longest(got[key], expected[key])
        first = next((g, e) for g, e in pairs if g != e)
        problems.append(
            f"key {key!r}: {len(got[key])} outputs, {len(expected[key])} expected; "
            f"first difference (got, expected) {first}"
        )
    if len(wrong) > 3:
        problems.append(f"and {len(wrong) - 3:,} more keys with wrong outputs")
    return "; ".join(problems)


def _first(keys: Iterable[Any]) -> Any:
    return next(iter(keys))
