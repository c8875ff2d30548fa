"""JSON orders on Kafka, for the poison-pill tests: a record that is not JSON stops
the worker under the default `fail` policy.

Names come from the environment: SKT_APP_ID (the group), SKT_INPUT (1 partition),
SKT_OUTPUT, and SKT_ON_ERROR (the input's policy, `fail` if unset). Each order goes
out as `<item> <offset>`.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

import streamkit as sk


class Order(BaseModel):
    item: str


app = sk.App(os.environ["SKT_APP_ID"])
orders = app.topic(
    os.environ["SKT_INPUT"],
    key_type=str,
    value_type=Order,
    partitions=1,
    on_error=os.environ.get("SKT_ON_ERROR", "fail"),
)
out = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=1)


@app.agent(orders, sink=out)
async def handle(stream: Any) -> Any:
    async for event in stream.events():
        yield event.key, f"{event.value.item} {event.offset}"
