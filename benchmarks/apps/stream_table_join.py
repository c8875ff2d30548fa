"""Stream-table join (DSL): each payment enriched with its user's row of a KTable read
from a co-partitioned users topic (`SKB_TABLE`, pre-filled with every user)."""

from __future__ import annotations

import streamkit as sk

from . import Enriched, Payment, User, env, partitions

app = sk.App(env("SKB_APP_ID"))
payments = app.topic(env("SKB_INPUT"), key_type=str, value_type=Payment, partitions=partitions())
users = app.topic(env("SKB_TABLE"), key_type=str, value_type=User, partitions=partitions())
enriched = app.topic(env("SKB_OUTPUT"), key_type=str, value_type=Enriched, partitions=partitions())

(
    app.stream(payments)
    .left_join(
        app.ktable(users),
        lambda p, u: Enriched(user_id=p.user_id, amount=p.amount, tier=u.tier if u else None),
    )
    .to(enriched)
)
