"""Count: payments per user in a table (SQLite + changelog); yields the running count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

from . import Payment, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
totals = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=int, partitions=partitions())
counts = app.table("counts", key_type=str, value_type=int, default=int)


@app.agent(payments, sink=totals)
async def count(stream: Any) -> AsyncIterator[tuple[str, int]]:
    async for user, _payment in stream.items():
        counts[user] += 1
        yield user, counts[user]
