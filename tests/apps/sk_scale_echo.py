"""One output per input, stamped with where it came from, for the scaling tests.

Names come from the environment, so each test (and each process) gets its own:
SKT_APP_ID (the consumer group), SKT_INPUT and SKT_OUTPUT (SKT_PARTITIONS partitions
each, 4 unless set),
SKT_WORKER (the worker's name, set by tests/cluster.py).

The output key is the input key; the value is
`<input value> <input partition> <input offset> <worker> <n>`, where n counts the
records this agent instance has seen: one instance per task, kept while the task
stays on the worker (suspended, not closed, across a rebalance).
"""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")
PARTITIONS = int(os.environ.get("SKT_PARTITIONS", "4"))

app = sk.App(os.environ["SKT_APP_ID"])
source = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str, partitions=PARTITIONS)
sink = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=PARTITIONS)


@app.agent(source, sink=sink)
async def echo(stream: Any) -> Any:
    seen = 0
    async for event in stream.events():
        seen += 1
        yield event.key, f"{event.value} {event.partition} {event.offset} {WORKER} {seen}"
