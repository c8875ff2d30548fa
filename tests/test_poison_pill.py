"""A record that fails under `fail` stops every restart at it; `streamkit reset` moves
the group's committed offset past it (streamkit/offsets.py).

On memory:// the move is tested in-process (the broker lives in the process); on
Tansu through the command line, with real worker processes, as an operator would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    Cluster,
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    run_cli,
    wait_for_commits,
)
from helpers import committed, read, running, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit.errors import BadInputError
from streamkit.offsets import ResetRefused, reset_offset
from streamkit.runtime.worker import Worker
from streamkit.transport.base import TopicPartition


class Order(BaseModel):
    item: str


def orders_app(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App("orders", broker=url, data_dir=data_dir)
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    out = app.topic("handled", key_type=str, value_type=str, partitions=1)

    @app.agent(orders, sink=out)
    async def handle(stream: Any) -> Any:
        async for key, order in stream.items():
            yield key, order.item

    return app, orders, out


GOOD = b'{"item": "tea"}'


def feed(url: str, values: list[bytes]) -> None:
    broker = sk.MemoryBroker.for_url(url)
    if broker.partition_count("orders") is None:
        broker.create_topic("orders", 1)
    for value in values:
        broker.append("orders", 0, b"k", value)


# memory:// ---------------------------------------------------------------------------


async def test_skip_moves_past_the_failed_record_and_the_worker_goes_on(
    memory_url: str, tmp_path: Path
) -> None:
    app, orders, out = orders_app(memory_url, tmp_path)
    feed(memory_url, [GOOD, GOOD, b"not json", GOOD])
    with pytest.raises(BadInputError, match=r"orders\[0\]@2"):
        await asyncio.wait_for(Worker(app).run(), 20)
    assert committed(app, orders) == {0: 2}  # everything before the failed record

    move = await reset_offset(memory_url, app.id, TopicPartition("orders", 0))
    assert move.describe() == (
        "group 'orders': committed offset of orders[0]: 2 -> 3 (1 record skipped)"
    )
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 3)
    assert committed(app, orders) == {0: 4}


async def test_reset_is_refused_while_a_worker_runs_and_outside_the_log(
    memory_url: str, tmp_path: Path
) -> None:
    app, _, out = orders_app(memory_url, tmp_path)
    feed(memory_url, [GOOD, GOOD])
    tp = TopicPartition("orders", 0)
    with pytest.raises(ResetRefused, match="no committed offset on orders"):
        await reset_offset(memory_url, app.id, tp)
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 2)
        with pytest.raises(ResetRefused, match="'orders' has 1 running member: stop every"):
            await reset_offset(memory_url, app.id, tp, to_offset=0)
    with pytest.raises(ResetRefused, match=r"offset 3 is outside orders\[0\].*give 0 to 2"):
        await reset_offset(memory_url, app.id, tp, to_offset=3)
    move = await reset_offset(memory_url, app.id, tp, to_offset=0)
    assert move.describe().endswith("2 -> 0 (2 records to be processed again)")


# Tansu, through the command line ------------------------------------------------------


async def _tea_with_a_bad_record_between(
    url: str, topic_name: Callable[[str], str], **extra: str
) -> dict[str, str]:
    """Topics of one partition holding good, `not json`, good; the app's environment."""
    env = {
        "SKT_APP_ID": topic_name("app"),
        "SKT_INPUT": topic_name("in"),
        "SKT_OUTPUT": topic_name("out"),
        **extra,
    }
    await create_topic(url, env["SKT_INPUT"], 1)
    await create_topic(url, env["SKT_OUTPUT"], 1)
    good = b'{"item": "tea"}'
    await produce(url, env["SKT_INPUT"], 1, [(b"k", good), (b"k", b"not json"), (b"k", good)])
    return env


@pytest.mark.timeout(120)
async def test_a_poison_pill_on_kafka_is_skipped_with_streamkit_reset(
    cluster: Cluster, topic_name: Callable[[str], str]
) -> None:
    url = cluster.kafka_url
    env = await _tea_with_a_bad_record_between(url, topic_name)

    # The worker stops at offset 1, saying how to move on.
    w1 = cluster.start("sk_poison:app", "w1", env=env)
    assert await w1.wait_exit(60) == 1, w1.output()
    error, hint = w1.log().strip().splitlines()[-2:]
    assert error.startswith(f"error: value deserialization failed on {env['SKT_INPUT']}[0]@1"), (
        w1.output()
    )
    command = (
        f"streamkit reset sk_poison:app --broker {url} --topic {env['SKT_INPUT']} "
        "--partition 0 --to-offset 2"
    )
    assert f"`{command}`" in hint, hint
    group = env["SKT_APP_ID"]
    assert await committed_offsets(url, group, env["SKT_INPUT"], 1) == {0: 1}

    # With no worker running, the skip moves the offset past the record.
    reset_args = ["reset", "sk_poison:app", "--broker", url, "--topic", env["SKT_INPUT"]]
    done = run_cli(env, [*reset_args, "--partition", "0", "--skip"])
    assert done.returncode == 0, done
    assert done.stdout.strip().endswith(": 1 -> 2 (1 record skipped)"), done
    assert await committed_offsets(url, group, env["SKT_INPUT"], 1) == {0: 2}

    # The next worker goes on from there.
    w2 = cluster.start("sk_poison:app", "w2", env=env)
    await wait_for_commits(url, group, env["SKT_INPUT"], {0: 3}, details=cluster.output)
    outputs = await read_topic(url, env["SKT_OUTPUT"], 1)
    assert [r.value for r in outputs] == [b"tea 0", b"tea 2"]

    # While it runs, a reset is refused, and the offset stays.
    refused = run_cli(env, [*reset_args, "--partition", "0", "--to-offset", "0"])
    assert refused.returncode == 1, refused
    assert "running member" in refused.stderr and "stop every worker" in refused.stderr, refused
    assert await committed_offsets(url, group, env["SKT_INPUT"], 1) == {0: 3}
    await w2.stop()


@pytest.mark.timeout(120)
async def test_under_dead_letter_a_bad_record_on_kafka_goes_to_the_dlq_with_its_error(
    cluster: Cluster, topic_name: Callable[[str], str]
) -> None:
    url = cluster.kafka_url
    env = await _tea_with_a_bad_record_between(url, topic_name, SKT_ON_ERROR="dead_letter")
    w1 = cluster.start("sk_poison:app", "w1", env=env)
    await wait_for_commits(url, env["SKT_APP_ID"], env["SKT_INPUT"], {0: 3}, details=w1.output)
    await w1.stop()

    outputs = await read_topic(url, env["SKT_OUTPUT"], 1)
    assert [r.value for r in outputs] == [b"tea 0", b"tea 2"]
    dlq = await read_topic_with_headers(url, f"{env['SKT_APP_ID']}-dlq")
    assert len(dlq) == 1, dlq
    value, headers = dlq[0]
    assert value == b"not json"
    assert headers["streamkit.error.topic"] == env["SKT_INPUT"].encode()
    assert headers["streamkit.error.partition"] == b"0"
    assert headers["streamkit.error.offset"] == b"1"
    assert headers["streamkit.error.stage"] == b"value deserialization"


async def read_topic_with_headers(url: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """(value, headers) of every record of a one-partition topic."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=url.split("://")[1], enable_auto_commit=False)
    await consumer.start()
    try:
        tp = KafkaTopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        fetched = await consumer.getmany(tp, timeout_ms=5000)
        return [(r.value, dict(r.headers)) for r in fetched.get(tp, [])]
    finally:
        await consumer.stop()
