"""Count page views per user: the example `make run` starts.

A timer plays a short burst of clicks into the `clicks` topic, an agent counts
them per user in a table (a SQLite store per task, backed by a changelog topic)
and yields the running count to `views-per-user`, and a second agent prints what
arrives there. Run it with

    streamkit worker examples.click_count:app --stop-when-idle 2
"""

import random

from pydantic import BaseModel

import streamkit as sk


class Click(BaseModel):
    user: str
    page: str


app = sk.App("clicks")
clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=4)
views = app.topic("views-per-user", key_type=str, value_type=int, partitions=4)
counts = app.table("view-counts", default=int)

USERS = ["ada", "grace", "linus", "margaret", "ken"]
PAGES = ["/", "/docs", "/pricing", "/blog"]
ROUNDS = 5
sent_rounds = 0


@app.timer(0.5)
async def make_clicks() -> None:
    global sent_rounds
    if sent_rounds == ROUNDS:
        return
    sent_rounds += 1
    for _ in range(20):
        user = random.choice(USERS)
        await app.send(clicks, key=user, value=Click(user=user, page=random.choice(PAGES)))


@app.agent(clicks, sink=views)
async def count_views(stream):
    async for user, _click in stream.items():
        counts[user] += 1
        yield user, counts[user]


@app.agent(views)
async def show(stream):
    async for user, count in stream.items():
        print(f"{user} has viewed {count} pages", flush=True)
