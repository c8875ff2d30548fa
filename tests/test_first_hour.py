"""The mistakes of a first hour with streamkit, each met by a message that says the way on."""

from __future__ import annotations

import logging

import pytest

import streamkit as sk
from streamkit import app as app_module


async def test_sending_to_memory_outside_a_worker_warns_once(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = sk.App("script", broker=memory_url)
    clicks = app.topic("clicks")
    app_module._warned_in_process.discard(memory_url)
    with caplog.at_level(logging.WARNING, logger="streamkit.app"):
        await app.send(clicks, key="a", value=1)
        await app.send_many(clicks, [("b", 2)])
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamkit.app"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"app.send to {memory_url} outside a worker: memory:// is a ")
    assert "never a `streamkit worker` elsewhere" in warnings[0]
    assert "overrides STREAMKIT_BROKER" in warnings[0]
