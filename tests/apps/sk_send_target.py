"""A topic to feed with `streamkit send`: SKT_TOPIC, 4 partitions, keyed by user."""

import os

from pydantic import BaseModel

import streamkit as sk


class Click(BaseModel):
    user: str
    page: str


app = sk.App("send-target")
clicks = app.topic(os.environ["SKT_TOPIC"], key_type=str, value_type=Click, partitions=4)
