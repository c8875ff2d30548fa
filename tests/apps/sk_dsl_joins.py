"""Orders joined with a KTable of customers and, within 5 s of event time, with
payments: the multi-process join tests (tests/test_dsl_joins_cluster.py).

Names come from the environment: SKT_APP_ID, SKT_ORDERS (customer -> order id),
SKT_CUSTOMERS (customer -> name), SKT_PAYMENTS (customer -> payment id), SKT_ENRICHED
(customer -> `<order>|<name>|<worker>`), SKT_PAID (customer -> `<order>|<payment>|<worker>`),
SKT_WORKER (the worker's name, set by tests/cluster.py). No topic declares a
partition count: the worker adopts the broker's, so topics of different counts
reach the co-partitioning check.
"""

from __future__ import annotations

import os

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")
JOIN_WINDOW_S = 5
# Past the whole event time a test spans: no record is late for the join.
JOIN_GRACE_S = 3600

app = sk.App(os.environ["SKT_APP_ID"])


def topic(variable: str) -> sk.Topic:
    return app.topic(os.environ[variable], key_type=str, value_type=str)


orders = app.stream(topic("SKT_ORDERS"))
customers = app.ktable(topic("SKT_CUSTOMERS"), name="customers")
payments = app.stream(topic("SKT_PAYMENTS"))

orders.join(customers, lambda order, name: f"{order}|{name}|{WORKER}", name="enrich").to(
    topic("SKT_ENRICHED")
)
orders.join(
    payments,
    lambda order, payment: f"{order}|{payment}|{WORKER}",
    window=sk.JoinWindows.of(JOIN_WINDOW_S, grace=JOIN_GRACE_S),
    name="paid",
).to(topic("SKT_PAID"))
