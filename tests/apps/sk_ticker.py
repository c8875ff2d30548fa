"""A worker that never runs out of input: a timer sends a tick every 50 ms.

Used by tests/test_cli.py to stop a busy worker with SIGTERM and SIGINT.
"""

from __future__ import annotations

import itertools
from typing import Any

import streamkit as sk

app = sk.App("ticker", broker="memory://")
ticks = app.topic("ticks", key_type=str, value_type=int, partitions=2)
_counter = itertools.count()


@app.timer(0.05)
async def tick() -> None:
    n = next(_counter)
    await app.send(ticks, key=f"k{n % 5}", value=n)


@app.agent(ticks)
async def show(stream: Any) -> None:
    async for key, n in stream.items():
        print(f"tick {n} for {key}", flush=True)
