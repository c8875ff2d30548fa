"""The app under chaos: a passthrough, a counting table, a windowed count with a grace
and a stream-table join, all reading one input topic.

Each click carries a unique id, so the checker can tell a lost record from a
duplicate in every output. Settings come from the environment (`CHAOS_*`, and
`STREAMKIT_*` for the worker, such as the processing guarantee).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

import streamkit as sk

PARTITIONS = int(os.environ.get("CHAOS_PARTITIONS", "4"))
WINDOW_S = float(os.environ.get("CHAOS_WINDOW_S", "5"))
GRACE_S = float(os.environ.get("CHAOS_GRACE_S", "3"))


class Click(BaseModel):
    id: int
    user: str


app = sk.App("chaos", commit_interval_s=float(os.environ.get("CHAOS_COMMIT_INTERVAL_S", "0.5")))
clicks = app.topic("chaos-clicks", key_type=str, value_type=Click, partitions=PARTITIONS)
profiles = app.topic("chaos-profiles", key_type=str, value_type=str, partitions=PARTITIONS)
echoed = app.topic("chaos-echoed", key_type=str, value_type=int, partitions=PARTITIONS)
counted = app.topic("chaos-counted", key_type=str, value_type=int, partitions=PARTITIONS)
windowed = app.topic("chaos-windowed", key_type=str, value_type=int, partitions=PARTITIONS)
joined = app.topic("chaos-joined", key_type=str, value_type=str, partitions=PARTITIONS)
counts = app.table("counts", key_type=str, value_type=int, default=int)


@app.agent(clicks, sink=echoed)
async def echo(stream: sk.Stream) -> Any:
    async for click in stream:
        yield click.id


@app.agent(clicks, sink=counted)
async def count(stream: sk.Stream) -> Any:
    async for user, _click in stream.items():
        counts[user] += 1
        yield user, counts[user]


(
    app.stream(clicks)
    .group_by_key()
    .windowed_by(sk.TimeWindows.of(WINDOW_S, grace=GRACE_S))
    .count(name="per-window", emit="final")
    .to_stream()
    .map(lambda window, n: (f"{window.key}@{window.start_ms}", n))
    .to(windowed)
)
app.stream(clicks).join(app.ktable(profiles), lambda click, name: f"{name}:{click.id}").to(joined)
