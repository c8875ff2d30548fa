"""A model-typed topic that receives one record that is not JSON, at offset 2.

A timer appends raw bytes on the in-process broker, bypassing the serdes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import streamkit as sk


class Order(BaseModel):
    item: str
    qty: int


app = sk.App("orders-app", broker="memory://")
orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
_sent = False


@app.timer(0.05)
async def feed() -> None:
    global _sent
    if _sent:
        return
    _sent = True
    broker = sk.MemoryBroker.for_url(app.settings.broker)
    for value in (b'{"item": "tea", "qty": 1}', b'{"item": "jam", "qty": 2}', b"not json"):
        broker.append("orders", 0, b"k", value)


@app.agent(orders)
async def handle(stream: Any) -> None:
    async for order in stream:
        print(f"order {order.item} x{order.qty}", flush=True)
