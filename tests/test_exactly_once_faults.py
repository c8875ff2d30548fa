"""Exactly-once under a random schedule of faults, on memory:// (tests/eos_faults.py).

The chaos app (a passthrough, a counting table, a windowed count with a grace and
final results only, a stream-table join) runs under exactly_once with input fed
throughout, while workers crash at every step of a task's commit, in the middle of a
batch, while restoring and while writing their state files; the broker aborts
transactions at their timeout and refuses a commit; a worker whose session expired
runs on as a zombie. A `read_committed` reader must then find every input exactly
once in every output, every count and every closed window equal to the truth, and
the table's changelog and its state files equal to the truth.

Each run draws a new seed, so that the suite explores other schedules over time; a
failure prints its seed and what happened when, and `STREAMKIT_EOS_FAULT_SEED=N`
replays that schedule (the timing of a run is the machine's, not the seed's).
`STREAMKIT_EOS_FAULTS=zombie:fenced,crash:restore` runs chosen faults instead.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from eos_faults import EosRun, FaultLoop, Faults, Point, schedule

from streamkit import MemoryBroker

FAULTS = os.environ.get("STREAMKIT_EOS_FAULTS")


def test_every_input_once_in_every_output_under_random_faults(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("STREAMKIT_EOS_FAULT_SEED") or random.randrange(100_000))
    rng = random.Random(seed)
    faults = FAULTS.split(",") if FAULTS else schedule(rng, extra=3)
    loop = FaultLoop()
    run = EosRun(
        memory_url, tmp_path, Faults(loop, MemoryBroker.for_url(memory_url), monkeypatch), rng
    )
    try:
        verdict = loop.run_until_complete(run.run(faults))
    except BaseException:
        print(f"seed {seed}, faults {faults}:\n" + "\n".join(run.log))
        loop.run_until_complete(loop.stop_the_living())
        raise
    finally:
        loop.bury()
        loop.close()
    report = f"seed {seed}, faults {faults}:\n" + "\n".join(run.log)
    assert verdict.failures(exactly_once=True) == [], (
        report + "\n" + "\n".join(verdict.failures(exactly_once=True))
    )
    assert verdict.lost == verdict.duplicates == 0, report
    assert verdict.inputs == run.produced > 100 * len(faults), report
    truth = Counter(f"user{i % 8}" for i in range(run.produced))
    assert run.table_in_files == dict(truth), report
    assert all(t.sprung.is_set() for t in run.sprung), report
    sprung = {f"{t.action}:{t.point}" for t in run.sprung}
    assert sprung >= {f"crash:{p}" for p in Point if p is not Point.ANYWHERE}, report
    assert {"timeout:before-txn-commit", "abort:before-txn-commit"} <= sprung, report
    assert {"delay:producer-init", "hold:before-txn-commit"} <= sprung, report
