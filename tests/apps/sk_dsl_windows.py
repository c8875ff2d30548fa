"""A tumbling windowed count with emit="final" in event time, for the multi-process
window test (tests/test_dsl_joins_cluster.py).

Names come from the environment: SKT_APP_ID, SKT_INPUT (key -> anything, counted
by the record timestamp) and SKT_OUTPUT (key -> `<start ms> <end ms> <count>
<worker>`), SKT_WORKER (the worker's name, set by tests/cluster.py).
"""

from __future__ import annotations

import os

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")
WINDOW_S = 10
GRACE_S = 5

app = sk.App(os.environ["SKT_APP_ID"])
events = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str)
counts = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str)

(
    app.stream(events)
    .group_by_key()
    .windowed_by(sk.TimeWindows(size=WINDOW_S, grace=GRACE_S))
    .count(name="per-window", emit="final")
    .to_stream()
    .map(lambda w, n: (w.key, f"{w.start_ms} {w.end_ms} {n} {WORKER}"))
    .to(counts)
)
