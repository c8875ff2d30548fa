"""The mistakes of a first hour with streamkit, each met by a message that says the way on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import running

import streamkit as sk
from streamkit import app_producer


async def test_records_sent_to_memory_that_no_worker_read_are_reported_at_exit(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = sk.App("script", broker=memory_url, data_dir=tmp_path)
    clicks = app.topic("clicks")
    await app.send(clicks, key="a", value=1)  # a script that feeds nobody
    await app.send_many(clicks, [("b", 2)])
    other = "memory://fed-in-process"
    fed = sk.App("fed", broker=other, data_dir=tmp_path)
    ticks = fed.topic("ticks")

    @fed.agent(ticks)
    async def read(stream: sk.Stream) -> None:
        async for _ in stream:
            pass

    await fed.send(ticks, key="a", value=1)  # a test that feeds its own worker
    async with running(fed):
        pass
    checked = "memory://read-back-in-process"
    sender = sk.App("sender", broker=checked, data_dir=tmp_path)
    await sender.send(sender.topic("orders"), key="a", value=1)  # a test that reads back
    assert len(sk.MemoryBroker.for_url(checked).records("orders")) == 1
    dropped = "memory://reset-in-process"
    dropper = sk.App("dropper", broker=dropped, data_dir=tmp_path)
    await dropper.send(dropper.topic("orders"), key="a", value=1)
    sk.MemoryBroker.reset("reset-in-process")  # a test's teardown: gone on purpose
    with caplog.at_level(logging.WARNING, logger="streamkit.app"):
        app_producer.warn_of_unseen_sends()  # what runs at exit
    sk.MemoryBroker.reset("fed-in-process")
    sk.MemoryBroker.reset("read-back-in-process")
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamkit.app"]
    # Other tests of this process may have sent to brokers of their own.
    assert not [w for w in warnings if other in w or checked in w or dropped in w], warnings
    warnings = [w for w in warnings if memory_url + " " in w]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"records sent to {memory_url} reached no worker: memory:// ")
    assert "never a `streamkit worker` elsewhere" in warnings[0]
    assert "overrides STREAMKIT_BROKER" in warnings[0]


def test_the_test_kit_pipes_bytes_that_fail_to_deserialize() -> None:
    from pydantic import BaseModel

    from streamkit.testing import TopologyTestDriver

    class Click(BaseModel):
        user: str

    app = sk.App("kit")
    clicks = app.topic("clicks", value_type=Click, on_error="dead_letter")
    strict = app.topic("strict", value_type=Click)
    users = app.topic("users")

    @app.agent(clicks, sink=users)
    async def who(stream: sk.Stream) -> object:
        async for click in stream:
            yield click.user

    @app.agent(strict)
    async def nothing(stream: sk.Stream) -> None:
        async for _ in stream:
            pass

    with TopologyTestDriver(app) as driver:
        driver.pipe_raw(clicks, b"k1", b"{not json")
        driver.pipe(clicks, "k2", Click(user="ada"))
        assert driver.read_output(users) == [("k2", "ada")]
        (dead,) = driver.read_records("kit-dlq")
        assert (dead.key, dead.value) == (b"k1", b"{not json")
        headers = dict(dead.headers)
        assert headers["streamkit.error.stage"] == b"value deserialization"
        assert headers["streamkit.error.offset"] == b"0"
        with pytest.raises(sk.BadInputError, match=r"strict\[0\]@0: .*Click validation failed"):
            driver.pipe_raw(strict, b"k", b'{"page": "/"}')
