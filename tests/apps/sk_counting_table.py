"""A counting table, for the failover and restore tests.

Names come from the environment: SKT_APP_ID (the consumer group and the changelog
prefix: `<app id>-counts-changelog`), SKT_INPUT and SKT_OUTPUT (4 partitions
each), SKT_WORKER (the worker's name, set by tests/cluster.py).

`sk_counting_table:app_when_told` is the same app, returned only once the file named
by SKT_GO_FILE exists: a worker started that way has done its imports and joins the
group within moments of the test creating the file.

With SKT_HOLD_RESTORE_FILE set, every restore holds after its first batch until
that file exists: a test arranges a rebalance while a restore is still going on,
however fast the machine restores.

With SKT_SLOW_RESTORE_S set, every restored batch takes that much longer: a
restore that makes progress, slowly. With SKT_HOLD_AGENT_FILE set, the agent logs
"holding at offset N" at its first record and holds until that file exists: a
task busy with its batch in hand, which a rebalance must wait for.

For each input the agent adds one to the key's count and outputs the key with
`<count> <input partition> <input offset> <worker>`, so a test can tell which
input, and which worker, produced each count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import streamkit as sk

WORKER = os.environ.get("SKT_WORKER", "?")
log = logging.getLogger("sk_counting_table")

app = sk.App(os.environ["SKT_APP_ID"])
source = app.topic(os.environ["SKT_INPUT"], key_type=str, value_type=str, partitions=4)
sink = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=4)
counts = app.table("counts", key_type=str, value_type=int, default=int)


class HoldRestore(sk.RestoreListener):
    def __init__(self, release: str) -> None:
        self.release = release

    async def on_batch_restored(self, task: Any, *_: Any) -> None:
        if not os.path.exists(self.release):  # noqa: ASYNC240
            log.info("holding the restore of task %s", task)
        # A file another process creates: nothing to await but time.
        while not os.path.exists(self.release):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.02)


class SlowRestore(sk.RestoreListener):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def on_batch_restored(self, *_: Any) -> None:
        await asyncio.sleep(self.seconds)


if "SKT_HOLD_RESTORE_FILE" in os.environ:
    app.set_restore_listener(HoldRestore(os.environ["SKT_HOLD_RESTORE_FILE"]))
elif "SKT_SLOW_RESTORE_S" in os.environ:
    app.set_restore_listener(SlowRestore(float(os.environ["SKT_SLOW_RESTORE_S"])))
HOLD_AGENT = os.environ.get("SKT_HOLD_AGENT_FILE")


async def hold_agent(offset: int) -> None:
    assert HOLD_AGENT is not None
    log.info("holding at offset %d", offset)
    # A file another process creates: nothing to await but time.
    while not os.path.exists(HOLD_AGENT):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.02)


@app.agent(source, sink=sink)
async def count(stream: Any) -> Any:
    held = HOLD_AGENT is None
    async for event in stream.events():
        if not held:
            held = True
            await hold_agent(event.offset)
        counts[event.key] += 1
        yield event.key, f"{counts[event.key]} {event.partition} {event.offset} {WORKER}"


def app_when_told() -> sk.App:
    go = os.environ["SKT_GO_FILE"]
    deadline = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{go} did not appear within 120 s")
        time.sleep(0.01)
    return app
