"""The exactly-once benchmark's own arithmetic: commit markers are not records, and a
run whose committed outputs are not its inputs' fails rather than report a figure."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from benchmarks.config import Config
from benchmarks.kafka import BenchError, CommittedReader, Observer, records_below
from benchmarks.procs import Processes
from benchmarks.runs import Run

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


def _run(tmp_path: Path, inputs: list[tuple[bytes, bytes]]) -> Run:
    cfg = Config(mode="test", records=len(inputs))
    run = Run(cfg, "kafka://unused:1", tmp_path, Processes(tmp_path), "t")
    run.inputs = inputs
    return run


def _reader(outputs: list[tuple[bytes, Any]]) -> CommittedReader:
    records = {0: [(i, key, json.dumps(value).encode()) for i, (key, value) in enumerate(outputs)]}
    return cast(CommittedReader, SimpleNamespace(records=records, count=len(outputs)))


INPUTS = [
    (b"a", b'{"user_id":"a","amount":1.5,"timestamp":1.0}'),
    (b"b", b'{"user_id":"b","amount":2.5,"timestamp":2.0}'),
    (b"a", b'{"user_id":"a","amount":3.5,"timestamp":3.0}'),
]


def test_passthrough_outputs_must_be_the_inputs(tmp_path: Path) -> None:
    run = _run(tmp_path, INPUTS)
    forwarded = [(k, json.loads(v)) for k, v in INPUTS]
    run._check_outputs("ok", _reader(forwarded), run._inputs_by_key())
    with pytest.raises(BenchError, match="4 outputs for 3 inputs"):
        run._check_outputs("dup", _reader([*forwarded, forwarded[0]]), run._inputs_by_key())
    with pytest.raises(BenchError, match="keys without outputs"):
        run._check_outputs("lost", _reader(forwarded[::2]), run._inputs_by_key())
    with pytest.raises(BenchError, match="first difference"):
        swapped = [forwarded[2], forwarded[1], forwarded[0]]
        run._check_outputs("order", _reader(swapped), run._inputs_by_key())


def test_count_outputs_must_be_running_counts(tmp_path: Path) -> None:
    run = _run(tmp_path, INPUTS)
    run._check_outputs("ok", _reader([(b"a", 1), (b"b", 1), (b"a", 2)]), run._counts_by_key())
    with pytest.raises(BenchError, match=r"key b'a'"):
        run._check_outputs(
            "twice", _reader([(b"a", 1), (b"b", 1), (b"a", 1)]), run._counts_by_key()
        )
