"""The app under chaos: a passthrough, a counting table, a windowed count with a grace
and a stream-table join, all reading one input topic.

Each click carries a unique id, so the checker can tell a lost record from a
duplicate in every output. `build` defines it on any App (the in-process
exactly-once fault test runs it on memory://); `app` is the one `streamkit worker
chaos.app:app` runs, with settings from the environment (`CHAOS_*`, and
`STREAMKIT_*` for the worker, such as the processing guarantee).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

import streamkit as sk

PARTITIONS = int(os.environ.get("CHAOS_PARTITIONS", "4"))
WINDOW_S = float(os.environ.get("CHAOS_WINDOW_S", "5"))
GRACE_S = float(os.environ.get("CHAOS_GRACE_S", "3"))


class Click(BaseModel):
    id: int
    user: str


@dataclass(frozen=True)
class ChaosApp:
    """The app and what the driver and the checker need of it."""

    app: sk.App
    clicks: sk.Topic
    profiles: sk.Topic
    echoed: sk.Topic
    counted: sk.Topic
    windowed: sk.Topic
    joined: sk.Topic
    partitions: int
    window_s: float


def build(
    app: sk.App,
    *,
    partitions: int = PARTITIONS,
    window_s: float = WINDOW_S,
    grace_s: float = GRACE_S,
) -> ChaosApp:
    """Define the chaos topics, table, agents and DSL on `app`."""

    def topic(name: str, value_type: type) -> sk.Topic:
        return app.topic(name, key_type=str, value_type=value_type, partitions=partitions)

    clicks, profiles = topic("chaos-clicks", Click), topic("chaos-profiles", str)
    echoed, counted = topic("chaos-echoed", int), topic("chaos-counted", int)
    windowed, joined = topic("chaos-windowed", int), topic("chaos-joined", str)
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
        .windowed_by(sk.TimeWindows.of(window_s, grace=grace_s))
        .count(name="per-window", emit="final")
        .to_stream()
        .map(lambda window, n: (f"{window.key}@{window.start_ms}", n))
        .to(windowed)
    )
    app.stream(clicks).join(app.ktable(profiles), lambda click, name: f"{name}:{click.id}").to(
        joined
    )
    return ChaosApp(app, clicks, profiles, echoed, counted, windowed, joined, partitions, window_s)


chaos = build(
    sk.App("chaos", commit_interval_s=float(os.environ.get("CHAOS_COMMIT_INTERVAL_S", "0.5")))
)
app = chaos.app
clicks, profiles, windowed = chaos.clicks, chaos.profiles, chaos.windowed
