"""Counters a user checks: records processed, bad records, agent failures.

prometheus_client keeps the counters (one registry per app, so two apps in one
process never mix); `value()` reads one back without an HTTP scrape.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records_processed = Counter(
            "streamkit_records_processed",
            "Input records done with: processed, or routed by their error policy",
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

        self.dropped_records = Counter(
            "streamkit_dropped_records",
            "Records a processor could not use (late for their window, null key), by reason",
            ["node", "reason"],
            registry=self.registry,
        )

    def serve(self, port: int) -> WSGIServer:
        """Serve `/metrics` for Prometheus on a background thread; shut it down after."""
        server, _thread = start_http_server(port, registry=self.registry)
        return server

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter, e.g. `value("bad_records", topic="t", policy="skip")`."""
        sample = self.registry.get_sample_value(f"streamkit_{name}_total", labels)
        return sample or 0.0
