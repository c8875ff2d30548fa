"""The chaos run's short form: each fault once, nothing lost (chaos/README.md).

Three real workers on the session's broker under continuous input: kill -9,
SIGTERM, SIGSTOP past the session timeout, and the broker frozen for 5 s. The
topics are then checked against the input: no input without its outputs, the
counts table and every closed window at or above the truth (and only above by
work a crash made a worker redo), every worker stopping cleanly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.procs import Processes, find_broker_process
from chaos.__main__ import run, summary
from chaos.driver import FAULTS, Options

pytestmark = pytest.mark.timeout(420)


async def test_each_fault_once_loses_nothing(kafka_url: str, tmp_path: Path) -> None:
    broker = find_broker_process(int(kafka_url.rsplit(":", 1)[1]))
    kinds = FAULTS if broker is not None else tuple(f for f in FAULTS if f != "broker_freeze")
    options = Options(
        url=kafka_url,
        workdir=tmp_path,
        duration_s=300,
        seed=12,
        sequence=kinds,
        broker_pid=None if broker is None else broker.pid,
        broker_freeze_s=5,  # `make chaos` freezes it for 10 s
    )
    outcome, verdict = await run(options, Processes(tmp_path))
    report = summary(outcome, verdict, options)
    assert Counter(f.kind for f in outcome.faults) == Counter(kinds), report
    assert verdict.inputs > 1000, report
    assert verdict.lost == 0, report
    assert verdict.failures(exactly_once=False) == [], report
    assert outcome.problems == [], report
    assert set(outcome.exit_codes.values()) == {0}, report
