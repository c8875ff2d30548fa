"""The fixed workloads: sizes and durations, so that figures compare over time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Config:
    mode: str
    records: int  # pre-filled input records (and changelog records for the restore)
    keys: int = 10_000  # distinct user ids
    partitions: int = 4
    latency_rate: int = 5_000  # offered load of the latency run, records/s
    latency_tick_s: float = 0.01  # the paced producer sends a batch this often
    latency_warmup_s: float = 2.0
    latency_s: float = 10.0  # measured after the warm-up
    join_settle_s: float = 3.0  # load kept on after the second worker owns its tasks
    # Pairs of runs (the ceiling's, then streamkit's) of each one-worker throughput;
    # the medians and the spread are reported.
    repeats: int = 1
    # Tansu holds a new group's first join for half the session timeout: 6 s gives 3 s.
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    phase_timeout_s: float = 120.0  # any single wait longer than this is a failure
    # The cost curve (benchmarks/curve.py): state sizes in keys, and the payments
    # counted at each.
    curve_keys: tuple[int, ...] = (10_000, 1_000_000, 5_000_000)
    curve_records: int = 500_000
    # Extra client options for the workers only (STREAMKIT_BENCH_WORKER_OPTIONS, JSON):
    # for experiments such as {"fetch_max_wait_ms": 20}; recorded in the results.
    worker_options: dict[str, Any] = field(default_factory=dict)

    def kafka_options(self) -> dict[str, Any]:
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
        }

    def worker_kafka_options(self) -> dict[str, Any]:
        return {**self.kafka_options(), **self.worker_options}


# 500,000 records: about 3 s of processing at streamkit's speed, so that the first
# half second (the ramp to full speed) and the last commit weigh little.
FULL = Config("full", records=500_000, latency_s=20.0, latency_warmup_s=3.0, repeats=3)
QUICK = Config(
    "quick",
    records=100_000,
    latency_s=8.0,
    latency_warmup_s=2.0,
    join_settle_s=2.0,
    curve_keys=(10_000, 100_000, 300_000),
    curve_records=100_000,
)
