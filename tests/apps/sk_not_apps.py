"""Attributes that are not streamkit Apps, for `streamkit worker sk_not_apps:<attr>`."""

from __future__ import annotations

from pydantic import BaseModel

import streamkit as sk

app = sk.App("real", broker="memory://")
answer = 42
names = ["ada", "grace"]


def make_nothing() -> None:
    return None


def make_app_badly() -> sk.App:
    raise RuntimeError("no broker configured")


async def start() -> None:
    return None


class Click(BaseModel):
    user: str
