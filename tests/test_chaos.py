"""The chaos run's short form: each fault once, nothing lost (chaos/README.md).

Three real workers on a broker of their own under continuous input: kill -9,
SIGTERM, SIGSTOP past the session timeout, and the broker frozen for 5 s. The
topics are then checked against the input: no input without its outputs, the
counts table and every closed window at or above the truth (and only above by
work a crash made a worker redo), every worker stopping cleanly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.procs import Processes
from chaos.__main__ import run, summary
from chaos.driver import FAULTS, Options
from streamkit.devbroker import DevBroker

pytestmark = pytest.mark.timeout(420)


async def test_each_fault_once_loses_nothing(tmp_path: Path) -> None:
    # A broker of its own: this test freezes it, and the session's broker may be
    # serving another test at the time (pytest -n 2).
    with DevBroker() as broker:
        assert broker.pid is not None
        options = Options(
            url=broker.url,
            workdir=tmp_path,
            duration_s=300,
            seed=12,
            sequence=FAULTS,
            broker_pid=broker.pid,
            broker_freeze_s=5,  # `make chaos` freezes it for 10 s
        )
        outcome, verdict = await run(options, Processes(tmp_path))
    report = summary(outcome, verdict, options)
    assert Counter(f.kind for f in outcome.faults) == Counter(FAULTS), report
    assert verdict.inputs > 1000, report
    assert verdict.lost == 0, report
    assert verdict.failures(exactly_once=False) == [], report
    assert outcome.problems == [], report
    assert set(outcome.exit_codes.values()) == {0}, report
