"""Count page views per page in one-minute windows of event time, in the Streams DSL.

Views are keyed by user; `group_by` re-keys them by page (through a repartition
topic), `windowed_by` cuts event time into 60 s tumbling windows, and
`count(emit="final")` writes one result per page and window, once the window has
closed: when the page's stream time has passed its end plus a 10 s grace. A view
that arrives within the grace still counts; a later one is dropped, counted in
`streamkit_dropped_records` and logged.

A timer plays four minutes of sample views (with a straggler or two), then one
view per page a little later that closes the last of those minutes. An agent
prints each final count from `page-view-counts`. Run it with

    streamkit worker examples.page_views:app --stop-when-idle 2
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

import streamkit as sk


class PageView(BaseModel):
    user: str
    page: str


class WindowCount(BaseModel):
    window_start: int  # ms since the epoch, inclusive
    window_end: int  # exclusive
    views: int


app = sk.App("page-views")
views = app.topic("page-views", key_type=str, value_type=PageView, partitions=4)
counts = app.topic("page-view-counts", key_type=str, value_type=WindowCount, partitions=4)

(
    app.stream(views)
    .group_by(lambda _user, view: view.page, name="by-page", key_type=str)
    .windowed_by(sk.TimeWindows(size=60, grace=10))
    .count(name="views-per-minute", emit="final")
    .to_stream()
    .map(
        lambda window, n: (
            window.key,
            WindowCount(window_start=window.start_ms, window_end=window.end_ms, views=n),
        )
    )
    .to(counts)
)


START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC: the sample's event time starts here
PAGES = ["/", "/docs", "/pricing", "/blog"]
USERS = ["ada", "grace", "linus", "margaret", "ken"]


def sample_ticks() -> list[list[tuple[str, str, int]]]:
    """What each timer tick sends: (user, page, seconds after START_MS), in order.

    Per minute m, first a view of each page at m:05, which moves the page's stream
    time into minute m, each followed by a straggler of the same user (same input
    partition, so it stays behind) from the end of minute m-1: inside the grace, it
    counts. Then the rest of minute m. Last, a view of each page at 5:15 closes
    minutes 0-3; minute 5 stays open.
    """
    ticks: list[list[tuple[str, str, int]]] = []
    for minute in range(4):
        base = minute * 60
        first: list[tuple[str, str, int]] = []
        for i, page in enumerate(PAGES):
            first.append((USERS[i], page, base + 5))
            if minute > 0 and i <= minute:
                first.append((USERS[i], page, base - 3))
        if minute == 3:
            first.append((USERS[1], "/docs", 90))  # minute 1 closed at 2:10: too late
        ticks.append(first)
        ticks.append(
            [
                (USERS[(i + n) % len(USERS)], page, base + 20 + 10 * n)
                for i, page in enumerate(PAGES)
                for n in range((i + minute) % 3 + 1)
            ]
        )
    ticks.append([(USERS[0], page, 5 * 60 + 15) for page in PAGES])
    return ticks


TICKS = sample_ticks()
sent_ticks = 0


@app.timer(0.3)
async def play_sample_views() -> None:
    global sent_ticks
    if sent_ticks == len(TICKS):
        return
    for user, page, seconds in TICKS[sent_ticks]:
        view = PageView(user=user, page=page)
        await app.send(views, key=user, value=view, timestamp_ms=START_MS + seconds * 1000)
    sent_ticks += 1


def clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


@app.agent(counts)
async def show(stream: Any) -> Any:
    async for page, result in stream.items():
        print(
            f"{page} {clock(result.window_start)}-{clock(result.window_end)}: {result.views} views",
            flush=True,
        )
