"""Windowed count (DSL): payments per user in 10 s tumbling windows of the payment's own
timestamp; every update of a window's count is emitted."""

from __future__ import annotations

import streamkit as sk

from . import Payment, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
counts = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=int, partitions=partitions())

(
    app.stream(payments, timestamp_extractor=lambda record: int(record.value.timestamp * 1000))
    .group_by_key()
    .windowed_by(sk.TimeWindows(size=10, grace=5))
    .count(name="counts")
    .to_stream()
    .map(lambda window, n: (window.key, n))
    .to(counts)
)
