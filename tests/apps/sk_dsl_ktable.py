"""A KTable regrouped and counted, for the multi-process DSL tests.

Names come from the environment: SKT_APP_ID, SKT_INPUT (user -> city, 4
partitions: the KTable's source and its store's changelog) and SKT_OUTPUT (city
-> number of users living there). Moving a user subtracts it from its old city,
read from the KTable's store: a worker that took the task over without restoring
that store from the topic would never decrement the old city.
"""

from __future__ import annotations

import os

import streamkit as sk

app = sk.App(os.environ["SKT_APP_ID"])
profiles = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str, partitions=4)
per_city = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=int, partitions=4)

(
    app.ktable(profiles, name="profiles")
    .group_by(lambda user, city: (city, user), name="by-city", key_type=str)
    .count(name="per-city")
    .to_stream()
    .to(per_city)
)
