"""Counters a user checks: records processed, bad records, agent failures.

prometheus_client keeps the counters (one registry per app, so two apps in one
process never mix); `value()` reads one back without an HTTP scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records_processed = Counter(
            "streamkit_records_processed",
            "Input records handed to agents",
            ["topic"],
            registry=self.registry,
        )
        self.bad_records = Counter(
            "streamkit_bad_records",
            "Records that failed to deserialize or validate, by policy",
            ["topic", "policy"],
            registry=self.registry,
        )
        self.agent_errors = Counter(
            "streamkit_agent_errors",
            "Records on which an agent raised, by policy",
            ["agent", "policy"],
            registry=self.registry,
        )

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter, e.g. `value("bad_records", topic="t", policy="skip")`."""
        sample = self.registry.get_sample_value(f"streamkit_{name}_total", labels)
        return sample or 0.0
