"""`stream.batches()`: an agent that takes its task's batches whole, on memory://.

Its outputs must be what the same agent would write one record at a time (events
keep their key, headers and timestamp), its offsets are committed only past what it
asked beyond, and a failing batch goes to the agent's policy as a whole: nothing of
it vanishes, and one log line says so.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from helpers import committed, read, running, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit import ErrorPolicy, MemoryBroker
from streamkit.transport import TopicPartition


class Payment(BaseModel):
    user: str
    amount: float


def _failed(app: sk.App, agent: str) -> bool:
    return app.metrics.value("agent_errors", agent=agent, policy="fail") > 0


def _app(memory_url: str, tmp_path: Any, name: str) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App(name, broker=memory_url, data_dir=tmp_path)
    payments = app.topic("payments", key_type=str, value_type=Payment, partitions=2)
    out = app.topic("out", key_type=str, value_type=Payment, partitions=2)
    return app, payments, out


async def test_a_batches_agent_writes_each_event_with_its_key_headers_and_timestamp(
    memory_url: str, tmp_path: Any
) -> None:
    app, payments, out = _app(memory_url, tmp_path, "batches-echo")
    sizes: list[int] = []

    @app.agent(payments, sink=out)
    async def echo(stream: sk.Stream) -> Any:
        async for batch in stream.batches():
            sizes.append(len(batch))
            yield [e for e in batch if e.value.amount > 0]  # a filter keeps whole events

    inputs = [(f"u{i % 7}", Payment(user=f"u{i % 7}", amount=i - 2), 1_000 + i) for i in range(60)]
    await app.send_many(payments, inputs)
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == 57, what="57 outputs")
        await wait_for(lambda: sum(v or 0 for v in committed(app, payments).values()) == 60)
    broker = MemoryBroker.for_url(memory_url)
    got = {(r.key, r.timestamp) for r in broker.records("out")}
    assert got == {(k.encode(), ts) for k, p, ts in inputs if p.amount > 0}
    # Each key went where the per-record path puts it: the topic's partitioner.
    for record in broker.records("out"):
        assert record.partition == out.partition_of(record.key)
    assert sum(sizes) == 60


async def test_key_value_pairs_from_a_batch_take_its_last_timestamp(
    memory_url: str, tmp_path: Any
) -> None:
    app, payments, _ = _app(memory_url, tmp_path, "batches-totals")
    totals = app.topic("totals", key_type=str, value_type=float, partitions=1)

    @app.agent(payments, sink=totals)
    async def total(stream: sk.Stream) -> Any:
        async for batch in stream.batches():
            yield [(f"p{batch[0].partition}", sum(e.value.amount for e in batch))]

    await app.send_many(payments, [("u1", Payment(user="u1", amount=1.5), 7)])
    expected = [(f"p{payments.partition_of(b'u1')}", 1.5)]
    async with running(app):
        await wait_for(lambda: read(app, totals) == expected, what="the batch's total")
    (record,) = MemoryBroker.for_url(memory_url).records("totals")
    assert record.timestamp == 7


@pytest.mark.parametrize("policy", [ErrorPolicy.SKIP, ErrorPolicy.DEAD_LETTER])
async def test_a_failing_batch_goes_to_the_policy_whole_with_one_log_line(
    memory_url: str, tmp_path: Any, policy: ErrorPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    app, payments, out = _app(memory_url, tmp_path, f"batches-fail-{policy.value}")
    payments = app.topic("single", key_type=str, value_type=Payment, partitions=1)

    @app.agent(payments, sink=out, on_error=policy)
    async def picky(stream: sk.Stream) -> Any:
        async for batch in stream.batches():
            if any(e.value.amount < 0 for e in batch):
                raise ValueError("a negative amount")
            yield batch

    good = [("u1", Payment(user="u1", amount=1), 1), ("u2", Payment(user="u2", amount=2), 2)]
    bad = [("u3", Payment(user="u3", amount=-1), 3), ("u4", Payment(user="u4", amount=4), 4)]
    tp = TopicPartition("single", 0)
    broker = MemoryBroker.for_url(memory_url)
    caplog.set_level(logging.WARNING, logger="streamkit.failures")
    async with running(app):
        await app.send_many(payments, good)
        await wait_for(lambda: len(read(app, out)) == 2, what="the good batch out")
        await app.send_many(payments, bad)
        await wait_for(lambda: broker.committed(app.id, tp) == 4, what="the bad batch handled")
    assert {k for k, _ in read(app, out)} == {"u1", "u2"}
    errors = app.metrics.value("agent_errors", agent="picky", policy=policy.value)
    assert errors == 2
    lines = [r.getMessage() for r in caplog.records if "failed on their batch" in r.getMessage()]
    assert len(lines) == 1
    assert "2 records single[0]@2..3: agent picky failed on their batch: ValueError" in lines[0]
    if policy is ErrorPolicy.DEAD_LETTER:
        dead = broker.records(f"{app.id}-dlq")
        assert [r.key for r in dead] == [b"u3", b"u4"]


async def test_a_failing_batch_under_fail_names_its_first_record(
    memory_url: str, tmp_path: Any
) -> None:
    app, _, out = _app(memory_url, tmp_path, "batches-stop")
    payments = app.topic("single", key_type=str, value_type=Payment, partitions=1)

    @app.agent(payments, sink=out)
    async def picky(stream: sk.Stream) -> Any:
        async for batch in stream.batches():
            raise ValueError(f"no batch of {len(batch)}")
            yield batch

    await app.send_many(payments, [("u1", Payment(user="u1", amount=1), 1)])
    with pytest.raises(sk.AgentError) as info:
        async with running(app):
            await wait_for(lambda: _failed(app, "picky"), what="the agent's failure")
    assert (info.value.topic, info.value.partition, info.value.offset) == ("single", 0, 0)
    assert "ValueError: no batch of 1" in str(info.value)
    assert committed(app, payments)[0] is None


async def test_a_yield_of_something_else_in_a_batch_is_an_error_naming_it(
    memory_url: str, tmp_path: Any
) -> None:
    app, payments, out = _app(memory_url, tmp_path, "batches-wrong")

    @app.agent(payments, sink=out)
    async def wrong(stream: sk.Stream) -> Any:
        async for batch in stream.batches():
            yield [e.value for e in batch]

    await app.send_many(payments, [("u1", Payment(user="u1", amount=1), 1)])
    with pytest.raises(sk.AgentError, match="events or \\(key, value\\) pairs, not Payment"):
        async with running(app):
            await wait_for(lambda: _failed(app, "wrong"), what="the agent's failure")
