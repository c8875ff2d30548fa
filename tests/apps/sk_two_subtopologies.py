"""Two sub-topologies, for the tests of spreading and of `--processes`.

SKT_APP_ID is the group; SKT_INPUT_A and SKT_INPUT_B (4 partitions each) are read by
one agent each, so the app has tasks 0_0..0_3 and 1_0..1_3. Both write to
SKT_OUTPUT: the input key, and `<input value> <topic letter> <partition> <offset>
<pid>`, so that every output names its input and the process that handled it.
"""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

app = sk.App(os.environ["SKT_APP_ID"])
a = app.topic(os.environ["SKT_INPUT_A"], key_type=str, value_type=str, partitions=4)
b = app.topic(os.environ["SKT_INPUT_B"], key_type=str, value_type=str, partitions=4)
out = app.topic(os.environ["SKT_OUTPUT"], key_type=str, value_type=str, partitions=4)


def stamp(letter: str) -> Any:
    async def agent(stream: Any) -> Any:
        async for e in stream.events():
            yield e.key, f"{e.value} {letter} {e.partition} {e.offset} {os.getpid()}"

    agent.__name__ = f"echo_{letter}"
    return agent


app.agent(a, sink=out)(stamp("a"))
app.agent(b, sink=out)(stamp("b"))
