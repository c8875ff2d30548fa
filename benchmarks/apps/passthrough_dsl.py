"""Passthrough written with the DSL: the same work as passthrough.py (each value validated
into the pydantic model and serialized again), without an agent's coroutine hand-off."""

from __future__ import annotations

import streamkit as sk

from . import Payment, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
forwarded = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=Payment, partitions=partitions())

app.stream(payments).to(forwarded)
