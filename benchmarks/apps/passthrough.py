"""Passthrough: validate each value into a pydantic model and forward it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

from . import Payment, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
forwarded = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=Payment, partitions=partitions())


@app.agent(payments, sink=forwarded)
async def forward(stream: Any) -> AsyncIterator[Payment]:
    async for payment in stream:
        yield payment
