"""Orders left-joined with a GlobalKTable of products, for the multi-process test.

Names come from the environment: SKT_APP_ID, SKT_INPUT (order id -> product id, 4
partitions), SKT_GLOBAL (product id -> product name, 2 partitions: every worker
reads both) and SKT_OUTPUT (order id -> `<product id>|<product name or None>|<worker>`),
SKT_WORKER (the worker's name, set by tests/cluster.py), so a test can tell which
worker's copy of the table answered each order.
"""

from __future__ import annotations

import os

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")

app = sk.App(os.environ["SKT_APP_ID"])
orders = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str, partitions=4)
products = app.topic(os.environ["SKT_GLOBAL"], key_type=str, value_type=str, partitions=2)
enriched = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=4)

catalog = app.global_ktable(products, name="catalog")
(
    app.stream(orders)
    .left_join(
        catalog,
        lambda product, name: f"{product}|{name}|{WORKER}",
        key_selector=lambda _order, product: product,
    )
    .to(enriched)
)
