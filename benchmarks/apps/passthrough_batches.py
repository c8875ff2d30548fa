"""Passthrough, a batch at a time: `stream.batches()` hands the agent each batch whole
and it yields the batch's events back, the same validated models out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

from . import Payment, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
forwarded = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=Payment, partitions=partitions())


@app.agent(payments, sink=forwarded)
async def forward(stream: Any) -> AsyncIterator[list[Any]]:
    async for batch in stream.batches():
        yield batch
