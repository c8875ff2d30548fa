"""A small DSL app for `streamkit topology`: filter, re-key, count through a
repartition topic, and a sink whose topic is chosen per record."""

from __future__ import annotations

import streamkit as sk

app = sk.App("dsl-topology")
views = app.topic("page-views", key_type=str, value_type=str, partitions=3)
per_page = app.topic("views-per-page", key_type=str, value_type=int, partitions=3)
bots = app.topic("bot-views", key_type=str, value_type=str, partitions=3)
humans = app.topic("human-views", key_type=str, value_type=str, partitions=3)

stream = app.stream(views)
(
    stream.filter(lambda user, page: page.startswith("/"))
    .select_key(lambda user, page: page)
    .group_by_key(name="by-page")
    .count(name="views-per-page")
    .to_stream()
    .to(per_page)
)
stream.to(lambda user, page, record: bots if user.startswith("bot") else humans, name="routed")
