"""A lost broker is two lines of streamkit's own, not thousands of aiokafka's; a port
that is not a Kafka broker is said in words within seconds
(streamkit/runtime/broker_health.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cluster import APPS, Cluster, create_topic

from streamkit.devbroker import DevBroker, free_port
from streamkit.runtime.broker_health import RepeatFilter, probe


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_of_an_aiokafka_error_are_held_back_and_counted() -> None:
    now = [0.0]
    lost: list[int] = []
    limiter = RepeatFilter(on_lost=lambda: lost.append(1), window_s=30, clock=lambda: now[0])
    msg = 'Unable connect to "%s": %s'
    assert limiter.filter(record("aiokafka", msg, "127.0.0.1:9092", "refused"))
    for _ in range(500):
        now[0] += 0.05
        assert not limiter.filter(record("aiokafka", msg, "127.0.0.1:9092", "refused"))
    now[0] = 31.0
    again = record("aiokafka", msg, "127.0.0.1:9092", "refused")
    assert limiter.filter(again)
    assert again.getMessage().endswith("(500 more like it in the last 31 s)")
    assert len(lost) == 502  # every sign reaches the watch; it logs once
    # Other loggers, and aiokafka below WARNING, pass untouched.
    assert all(limiter.filter(record("streamkit.task", "x")) for _ in range(3))
    assert all(limiter.filter(record("aiokafka", msg, level=logging.INFO)) for _ in range(3))


@pytest.fixture
async def not_kafka() -> AsyncIterator[Callable[[bytes | None], Awaitable[str]]]:
    """Servers on free ports that answer any request with `reply`, or (None) never."""
    servers: list[asyncio.Server] = []

    async def serve(reply: bytes | None) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            if reply is not None:
                writer.write(reply)
                await writer.drain()
            else:
                await asyncio.sleep(30)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield serve
    for server in servers:
        server.close()


async def test_the_probe_tells_a_kafka_broker_from_other_servers(
    kafka_url: str, not_kafka: Callable[[bytes | None], Awaitable[str]]
) -> None:
    assert await probe(kafka_url.split("://")[1]) is None
    http = await not_kafka(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    began = time.monotonic()
    said = await probe(http)
    assert said is not None and "does not speak the Kafka protocol" in said, said
    silent = await not_kafka(None)
    said = await probe(silent, timeout_s=1)
    assert said is not None and "gave no Kafka answer within 1 s" in said, said
    assert time.monotonic() - began < 10
    said = await probe(f"127.0.0.1:{free_port()}")
    assert said is not None and said.startswith("cannot connect to 127.0.0.1:"), said


async def test_a_worker_pointed_at_a_port_that_is_not_kafka_says_so_in_words(
    not_kafka: Callable[[bytes | None], Awaitable[str]], topic_name: Callable[[str], str]
) -> None:
    server = await not_kafka(b"SSH-2.0-OpenSSH_9.6\r\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env.update(SKT_APP_ID=topic_name("app"), SKT_INPUT="in", SKT_OUTPUT="out")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamkit",
        "worker",
        "sk_counting_table:app",
        "--broker",
        f"kafka://{server}",
        cwd=APPS,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: broker kafka://{server}: something listens on {server}"), last
    assert "does not speak the Kafka protocol" in last, last
    assert "Traceback" not in stderr


@pytest.mark.timeout(120)
async def test_a_lost_broker_is_one_warning_and_its_return_another(
    topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    port = free_port()
    broker = DevBroker(port=port).start()
    running = Cluster(broker.url, tmp_path)
    try:
        app_id = topic_name("app")
        env = {"SKT_APP_ID": app_id, "SKT_INPUT": topic_name("in"), "SKT_OUTPUT": topic_name("out")}
        await create_topic(broker.url, env["SKT_INPUT"], 4)
        await create_topic(broker.url, env["SKT_OUTPUT"], 4)
        w1 = running.start("sk_counting_table:app", "w1", env=env)
        await running.wait_for_assignment([w1], {f"0_{p}" for p in range(4)})
        await w1.wait_for_line(r"streamkit\.task: task 0_\d restored", count=4)
        broker.stop()
        lost = await w1.wait_for_line(
            rf"streamkit\.broker: broker 127\.0\.0\.1:{port} unreachable since "
            r"\d\d:\d\d:\d\d, retrying$"
        )
        broker = DevBroker(port=port).start()
        back = await w1.wait_for_line(
            rf"streamkit\.broker: broker 127\.0\.0\.1:{port} reachable again after \d+ s "
            r"\(unreachable since \d\d:\d\d:\d\d\)$"
        )
        log = w1.log()
        assert log.count("unreachable since") == 2, w1.output()  # the warning and the return
        assert lost.split("since ")[1][:8] == back.split("since ")[1][:8]
        errors = [line for line in log.splitlines() if " ERROR " in line and "aiokafka" in line]
        assert len(errors) < 40, f"{len(errors)} aiokafka errors\n" + "\n".join(errors[:60])
        w1.terminate()
        await w1.wait_exit(60)
        assert "Traceback" not in w1.log(), w1.output()
    finally:
        running.kill_all()
        broker.stop()
