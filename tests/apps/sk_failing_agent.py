"""An agent that raises on the record at offset 5 of a one-partition topic.

A timer sends the values 0..9 once, so value n sits at offset n.
"""

from __future__ import annotations

from typing import Any

import streamkit as sk

app = sk.App("failing", broker="memory://")
numbers = app.topic("numbers", key_type=str, value_type=int, partitions=1)
_sent = False


@app.timer(0.05)
async def feed() -> None:
    global _sent
    if _sent:
        return
    _sent = True
    for n in range(10):
        await app.send(numbers, key="k", value=n)


@app.agent(numbers)
async def explode(stream: Any) -> None:
    async for n in stream:
        if n == 5:
            raise ValueError(f"cannot handle {n}")
        print(f"handled {n}", flush=True)
