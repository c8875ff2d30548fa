"""An app whose timer blocks the event loop for good: only the hard-exit watchdog
of `run_worker` can end this worker once it is told to stop."""

from __future__ import annotations

import sys
import time

import streamkit as sk

app = sk.App("blocking-loop", broker="memory://")
ticks = app.topic("ticks", key_type=str, value_type=int, partitions=1)


@app.timer(0.2)
async def block() -> None:
    print("blocking the loop", file=sys.stderr, flush=True)
    time.sleep(600)  # noqa: ASYNC251 (the point of this app)
