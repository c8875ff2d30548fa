"""Bad input and failing agents under each error policy, on the memory broker.

DESIGN.md invariant 8: a record that fails to deserialize or validate never stops
the worker silently and never vanishes. Hypothesis builds mixed batches of raw
records (valid model JSON, malformed JSON, JSON of the wrong types or shape, empty
and ~1 MB values, tombstones, null keys, non-UTF-8 keys) that are appended to the
broker as bytes, bypassing the serdes, and each policy is checked against the
classification the batch was built with.

Null values (Kafka tombstones) on a model-typed topic are *not* bad input: serde.py
passes a None value through as None (no serde may invent a value), so the agent
sees the event with `value is None`. JSON `null` (the bytes b"null") is a value and
fails model validation. A null key is "no key" and reaches the agent as None.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import committed, read, running, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from pydantic import BaseModel

import streamkit as sk
from streamkit import BadInputError, ErrorPolicy, Event, MemoryBroker
from streamkit.transport.memory import MemoryRecord

PARTITIONS = 3
TOPIC = "items"
KEY_STAGE = "key deserialization"
VALUE_STAGE = "value deserialization"
LARGE = 1_000_000

_names = itertools.count()

hypothesis_settings = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Item(BaseModel):
    name: str
    qty: int


# Raw input and what it should become ------------------------------------------


@dataclass(frozen=True)
class RawKey:
    data: bytes | None
    good: bool


@dataclass(frozen=True)
class RawValue:
    data: bytes | None
    good: bool


@dataclass(frozen=True)
class Input:
    """One record as appended: where it went and whether the topic's serdes accept it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int
    bad_stage: str | None  # the first serde that must refuse it, or None if it is good

    @property
    def where(self) -> tuple[int, int]:
        return self.partition, self.offset

    def expected_key(self) -> str | None:
        return None if self.key is None else self.key.decode()

    def expected_value(self) -> Item | None:
        return None if self.value is None else Item.model_validate_json(self.value)


def _item_json(name: str, qty: int, extra: bool, ascii_only: bool) -> bytes:
    body: dict[str, Any] = {"name": name, "qty": qty}
    if extra:
        body["note"] = ["ignored", 1]  # unknown fields are ignored by the model
    return json.dumps(body, ensure_ascii=ascii_only).encode()


valid_json = st.builds(
    _item_json,
    st.text(max_size=20).filter(lambda name: name != "boom"),  # "boom" makes the agent raise
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.booleans(),
)

# A strict prefix of a JSON object is never valid JSON: the object only closes at its '}'.
truncated_json = st.tuples(valid_json, st.integers(min_value=0, max_value=10**6)).map(
    lambda t: t[0][: 1 + t[1] % (len(t[0]) - 1)]
)

wrong_types = st.one_of(
    st.builds(lambda n: json.dumps({"name": n, "qty": 1}).encode(), st.integers()),
    st.sampled_from(
        [
            b'{"name": null, "qty": 1}',
            b'{"name": "a", "qty": "ten"}',
            b'{"name": "a", "qty": 3.5}',
            b'{"name": "a", "qty": [1]}',
            b'{"name": "a", "qty": {}}',
            b'{"name": "a", "qty": null}',
            b'{"name": "a"}',
            b"{}",
        ]
    ),
)

# Well-formed JSON that is not an object, including JSON null (which is not a tombstone).
wrong_shape = st.sampled_from([b"null", b"[]", b"[1, 2]", b"42", b'"item"', b"true"])

non_utf8 = st.binary(max_size=10).map(lambda b: b"\xff" + b)

large_valid = st.just(_item_json("x" * LARGE, 1, False, True))
large_malformed = st.just(b'{"name": "' + b"x" * LARGE)

raw_values = st.one_of(
    valid_json.map(lambda b: RawValue(b, True)),
    st.just(RawValue(None, True)),  # tombstone: passes through as None
    truncated_json.map(lambda b: RawValue(b, False)),
    wrong_types.map(lambda b: RawValue(b, False)),
    wrong_shape.map(lambda b: RawValue(b, False)),
    st.just(RawValue(b"", False)),
    non_utf8.map(lambda b: RawValue(b, False)),
    st.sampled_from([large_valid, large_malformed])
    .flatmap(lambda s: s)
    .map(lambda b: RawValue(b, b.endswith(b"}"))),
)

raw_keys = st.one_of(
    st.text(max_size=10).map(lambda s: RawKey(s.encode(), True)),
    st.just(RawKey(None, True)),  # no key
    non_utf8.map(lambda b: RawKey(b, False)),
)

Spec = list[tuple[int, RawKey, RawValue]]  # (partition, key, value) in append order
batches = st.lists(
    st.tuples(st.integers(min_value=0, max_value=PARTITIONS - 1), raw_keys, raw_values),
    min_size=1,
    max_size=25,
)


# (max_poll_records, partition_buffer_records): one big chunk per fetch, or small chunks
# with queues that fill up, so that partitions are paused and resumed (back-pressure).
tunings = st.sampled_from([(2000, 10_000), (3, 2), (1, 1)])
Tuning = tuple[int, int]


def _bucket(n: int) -> str:
    return str(n) if n < 3 else "3+"


def _fresh_url() -> tuple[str, str]:
    name = f"bad-input-{next(_names)}"
    MemoryBroker.reset(name)
    return name, f"memory://{name}"


def _append(broker: MemoryBroker, spec: Spec) -> list[Input]:
    inputs = []
    for i, (partition, key, value) in enumerate(spec):
        headers = (("origin", f"input-{i}".encode()),)
        timestamp = 1_000 + i
        offset = broker.append(TOPIC, partition, key.data, value.data, headers, timestamp)
        stage = KEY_STAGE if not key.good else VALUE_STAGE if not value.good else None
        inputs.append(Input(partition, offset, key.data, value.data, headers, timestamp, stage))
    return inputs


@dataclass
class Scenario:
    app: sk.App
    topic: sk.Topic
    broker: MemoryBroker
    seen: list[Event]
    starts: list[int]


@contextmanager
def scenario(
    *,
    topic_policy: ErrorPolicy,
    agent_policy: ErrorPolicy = ErrorPolicy.FAIL,
    tuning: Tuning = (2000, 10_000),
) -> Iterator[Scenario]:
    """A fresh broker with the source topic created, and an app whose agent records events.

    The agent raises ValueError on an Item whose name is "boom".
    """
    name, url = _fresh_url()
    try:
        max_poll_records, partition_buffer_records = tuning
        app = sk.App(
            "bad-input",
            broker=url,
            commit_interval_s=0.02,
            max_poll_records=max_poll_records,
            partition_buffer_records=partition_buffer_records,
        )
        topic = app.topic(
            TOPIC, key_type=str, value_type=Item, partitions=PARTITIONS, on_error=topic_policy
        )
        seen: list[Event] = []
        starts: list[int] = []

        @app.agent(topic, on_error=agent_policy)
        async def consume(stream: sk.Stream) -> None:
            starts.append(1)
            async for event in stream.events():
                if isinstance(event.value, Item) and event.value.name == "boom":
                    raise ValueError(f"boom at {event.partition}@{event.offset}")
                seen.append(event)

        broker = MemoryBroker.for_url(url)
        broker.create_topic(TOPIC, PARTITIONS)
        yield Scenario(app, topic, broker, seen, starts)
    finally:
        MemoryBroker.reset(name)


@contextmanager
def captured(logger: str) -> Iterator[list[str]]:
    """Messages logged at WARNING or above by one logger, during the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield messages
    finally:
        log.removeHandler(handler)


SKIPPED = re.compile(
    r"^skipped (?P<topic>[\w.-]+)\[(?P<p>\d+)\]@(?P<o>\d+): (?P<stage>.+?) failed: "
)


def _skipped(messages: list[str]) -> list[tuple[int, int, str]]:
    out = []
    for message in messages:
        match = SKIPPED.match(message)
        if match:
            assert match["topic"] == TOPIC
            out.append((int(match["p"]), int(match["o"]), match["stage"]))
    return out


def _count(s: Scenario, topic: str) -> int:
    """Records in a topic; 0 while the worker has not created it yet."""
    return len(s.broker.records(topic)) if topic in s.broker.topics() else 0


def _committed(s: Scenario) -> dict[int, int]:
    return {p: offset or 0 for p, offset in committed(s.app, s.topic).items()}


def _caught_up(s: Scenario) -> bool:
    """Committed offsets at the end of every partition (0 for an empty one)."""
    ends = {p: len(s.broker.records(TOPIC, p)) for p in range(PARTITIONS)}
    return _committed(s) == ends


def _check_processed(s: Scenario, inputs: list[Input], expected: set[tuple[int, int]]) -> None:
    """The agent saw exactly `expected`, once each, with the decoded key, value and metadata."""
    by_where = {i.where: i for i in inputs}
    seen = [(e.partition, e.offset) for e in s.seen]
    assert len(seen) == len(set(seen)), f"records processed twice: {sorted(seen)}"
    assert set(seen) == expected
    for event in s.seen:
        source = by_where[(event.partition, event.offset)]
        assert event.topic == TOPIC
        assert event.key == source.expected_key()
        assert event.value == source.expected_value()
        if source.value is None:
            assert event.value is None  # a tombstone reaches the agent as None
        assert tuple(event.headers) == source.headers
        assert event.timestamp == source.timestamp
    for p in range(PARTITIONS):
        offsets = [o for q, o in seen if q == p]
        assert offsets == sorted(offsets), f"partition {p} processed out of order: {offsets}"


def _dead_letters(s: Scenario) -> dict[tuple[int, int], MemoryRecord]:
    out: dict[tuple[int, int], MemoryRecord] = {}
    for record in s.broker.records(f"{s.app.id}-dlq"):
        headers = dict(record.headers)
        assert headers["streamkit.error.topic"] == TOPIC.encode()
        where = (
            int(headers["streamkit.error.partition"]),
            int(headers["streamkit.error.offset"]),
        )
        assert where not in out, f"{where} dead-lettered twice"
        out[where] = record
    return out


def _check_dead_letter(record: MemoryRecord, source: Input, stage: str) -> None:
    headers = dict(record.headers)
    assert record.key == source.key  # raw bytes, even when they are not UTF-8
    assert record.value == source.value  # raw bytes, even ~1 MB or empty
    assert record.timestamp == source.timestamp
    assert headers["streamkit.error.stage"] == stage.encode()
    assert headers["streamkit.error.reason"].strip(), "empty reason"
    assert b"\n" not in headers["streamkit.error.reason"]
    assert len(headers["streamkit.error.reason"]) <= 500
    assert headers["origin"] == source.headers[0][1]  # the record's own headers are kept


# Bad input, by policy -----------------------------------------------------------


async def _dead_letter_case(spec: Spec, tuning: Tuning) -> None:
    with scenario(topic_policy=ErrorPolicy.DEAD_LETTER, tuning=tuning) as s:
        half = len(spec) // 2
        inputs = _append(s.broker, spec[:half])  # waiting before the worker starts
        async with running(s.app):
            inputs += _append(s.broker, spec[half:])  # arriving while it runs
            dlq = f"{s.app.id}-dlq"
            await wait_for(
                lambda: len(s.seen) + _count(s, dlq) >= len(inputs) and _caught_up(s),
                what="every record processed or dead-lettered, offsets committed",
            )
        bad = {i.where: i for i in inputs if i.bad_stage}
        good = {i.where for i in inputs if not i.bad_stage}
        note_event(f"dead_letter: {_bucket(len(bad))} bad, {_bucket(len(good))} good")
        _check_processed(s, inputs, good)
        dead = _dead_letters(s)
        assert set(dead) == set(bad)
        for where, record in dead.items():
            stage = bad[where].bad_stage
            assert stage is not None
            _check_dead_letter(record, bad[where], stage)
        assert _caught_up(s)
        metric = s.app.metrics.value("bad_records", topic=TOPIC, policy="dead_letter")
        assert metric == len(bad)
        assert s.starts == [1] * PARTITIONS  # bad input never restarts the agent


@hypothesis_settings
@given(batches, tunings)
def test_dead_letter_policy_loses_nothing(spec: Spec, tuning: Tuning) -> None:
    asyncio.run(_dead_letter_case(spec, tuning))


async def _skip_case(spec: Spec, tuning: Tuning) -> None:
    with (
        scenario(topic_policy=ErrorPolicy.SKIP, tuning=tuning) as s,
        captured("streamkit.failures") as logs,
    ):
        inputs = _append(s.broker, spec)
        async with running(s.app):
            await wait_for(
                lambda: len(s.seen) + len(_skipped(logs)) >= len(inputs) and _caught_up(s),
                what="every record processed or skipped, offsets committed",
            )
        skipped = _skipped(logs)
        good = {i.where for i in inputs if not i.bad_stage}
        _check_processed(s, inputs, good)
        assert len(s.seen) + len(skipped) == len(inputs)
        assert sorted(skipped) == sorted((*i.where, i.bad_stage) for i in inputs if i.bad_stage)
        assert s.app.metrics.value("bad_records", topic=TOPIC, policy="skip") == len(skipped)
        assert f"{s.app.id}-dlq" not in s.broker.topics()  # no dead-letter topic is used
        assert _caught_up(s)


@hypothesis_settings
@given(batches, tunings)
def test_skip_policy_counts_what_it_skips(spec: Spec, tuning: Tuning) -> None:
    asyncio.run(_skip_case(spec, tuning))


async def _fail_case(spec: Spec, tuning: Tuning) -> None:
    with scenario(topic_policy=ErrorPolicy.FAIL, tuning=tuning) as s:
        inputs = _append(s.broker, spec)
        first_bad: dict[int, Input] = {}
        for i in inputs:
            if i.bad_stage and i.partition not in first_bad:
                first_bad[i.partition] = i
        note_event(f"fail policy: {'stopped by bad input' if first_bad else 'no bad input'}")
        if not first_bad:
            async with running(s.app):
                await wait_for(
                    lambda: len(s.seen) == len(inputs) and _caught_up(s),
                    what="every record processed and committed",
                )
            _check_processed(s, inputs, {i.where for i in inputs})
            return

        def failed() -> bool:
            return s.app.metrics.value("bad_records", topic=TOPIC, policy="fail") >= 1

        with pytest.raises(BadInputError) as info:
            async with running(s.app):
                await wait_for(failed, what="the worker to meet a bad record")
        error = info.value
        assert error.topic == TOPIC
        bad = first_bad.get(error.partition)
        assert bad is not None, f"{error} names a partition without bad records"
        assert error.offset == bad.offset, f"{error} is not the first bad record of its partition"
        assert error.stage == bad.bad_stage
        assert f"{TOPIC}[{bad.partition}]@{bad.offset}" in str(error)

        offsets = _committed(s)
        processed = {(e.partition, e.offset) for e in s.seen}
        # The failed partition: everything before the bad record, and nothing from it on.
        assert offsets[bad.partition] == bad.offset  # a restart retries the bad record
        assert {o for p, o in processed if p == bad.partition} == set(range(bad.offset))
        # Every partition: what is committed was processed, and no bad record was passed.
        for p in range(PARTITIONS):
            upto = offsets[p]
            assert {o for q, o in processed if q == p} == set(range(upto))
            if p in first_bad:
                assert upto <= first_bad[p].offset
        _check_processed(s, inputs, processed)


@hypothesis_settings
@given(batches, tunings)
def test_fail_policy_stops_at_the_first_bad_record(spec: Spec, tuning: Tuning) -> None:
    asyncio.run(_fail_case(spec, tuning))


async def test_fail_policy_is_the_default(memory_url: str) -> None:
    app = sk.App("default-policy", broker=memory_url)
    topic = app.topic(TOPIC, key_type=str, value_type=Item, partitions=1)
    assert topic.on_error is ErrorPolicy.FAIL
    seen: list[Item] = []

    @app.agent(topic)
    async def consume(stream: sk.Stream) -> None:
        async for item in stream:
            seen.append(item)

    await app.send(topic, key="a", value=Item(name="tea", qty=1))
    MemoryBroker.for_url(memory_url).append(TOPIC, 0, b"a", b"{oops", (), 5)
    with pytest.raises(BadInputError, match=r"value deserialization failed on items\[0\]@1: "):
        async with running(app):
            await wait_for(
                lambda: app.metrics.value("bad_records", topic=TOPIC, policy="fail") == 1
            )
    assert seen == [Item(name="tea", qty=1)]
    assert committed(app, topic) == {0: 1}

    # A restart resumes at the committed offset and meets the same record again.
    with pytest.raises(BadInputError, match=r"items\[0\]@1: "):
        async with running(app):
            await wait_for(
                lambda: app.metrics.value("bad_records", topic=TOPIC, policy="fail") == 2
            )
    assert seen == [Item(name="tea", qty=1)]
    assert committed(app, topic) == {0: 1}


# Tombstones -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(ErrorPolicy))
async def test_tombstone_reaches_the_agent_as_none(policy: ErrorPolicy, memory_url: str) -> None:
    """A null value is a tombstone, not bad input; JSON null is bad input."""
    app = sk.App("tombstones", broker=memory_url, commit_interval_s=0.02)
    topic = app.topic(TOPIC, key_type=str, value_type=Item, partitions=1, on_error=policy)
    seen: list[tuple[Any, Any]] = []

    @app.agent(topic)
    async def consume(stream: sk.Stream) -> None:
        async for key, value in stream.items():
            seen.append((key, value))

    broker = MemoryBroker.for_url(memory_url)
    broker.create_topic(TOPIC, 1)
    broker.append(TOPIC, 0, b"gone", None)
    broker.append(TOPIC, 0, None, None)
    broker.append(TOPIC, 0, b"kept", b'{"name": "tea", "qty": 2}')
    async with running(app):
        await wait_for(lambda: len(seen) == 3 and committed(app, topic) == {0: 3})
    assert seen == [("gone", None), (None, None), ("kept", Item(name="tea", qty=2))]
    assert read(app, topic) == seen  # the topic's own serdes agree
    assert app.metrics.value("bad_records", topic=TOPIC, policy=policy.value) == 0

    if policy is ErrorPolicy.FAIL:
        return
    # The bytes b"null" are a JSON value, and not an Item.
    broker.append(TOPIC, 0, b"json-null", b"null")
    broker.append(TOPIC, 0, b"after", None)
    async with running(app):
        await wait_for(lambda: len(seen) == 4 and committed(app, topic) == {0: 5})
    assert seen[3:] == [("after", None)]
    assert app.metrics.value("bad_records", topic=TOPIC, policy=policy.value) == 1


# Agent exceptions -------------------------------------------------------------------


agent_batches = st.lists(
    st.tuples(st.integers(min_value=0, max_value=PARTITIONS - 1), st.booleans()),
    min_size=1,
    max_size=30,
)


def _agent_inputs(
    s: Scenario, spec: list[tuple[int, bool]]
) -> tuple[list[Input], set[tuple[int, int]]]:
    inputs: list[Input] = []
    failing: set[tuple[int, int]] = set()
    for i, (partition, boom) in enumerate(spec):
        value = Item(name="boom" if boom else f"ok-{i}", qty=i).model_dump_json().encode()
        headers = (("origin", f"input-{i}".encode()),)
        offset = s.broker.append(TOPIC, partition, f"k{i}".encode(), value, headers, 1_000 + i)
        inputs.append(Input(partition, offset, f"k{i}".encode(), value, headers, 1_000 + i, None))
        if boom:
            failing.add((partition, offset))
    return inputs, failing


async def _agent_error_case(
    spec: list[tuple[int, bool]], policy: ErrorPolicy, tuning: Tuning
) -> None:
    with (
        scenario(topic_policy=ErrorPolicy.FAIL, agent_policy=policy, tuning=tuning) as s,
        captured("streamkit.failures") as logs,
    ):
        half = len(spec) // 2
        inputs, failing = _agent_inputs(s, spec[:half])
        async with running(s.app):
            more, more_failing = _agent_inputs(s, spec[half:])
            inputs += more
            failing |= more_failing

            def handled() -> int:
                return int(
                    s.app.metrics.value("agent_errors", agent="consume", policy=policy.value)
                )

            await wait_for(
                lambda: len(s.seen) + handled() >= len(inputs) and _caught_up(s),
                what="every record processed or handled, offsets committed",
            )
        _check_processed(s, inputs, {i.where for i in inputs} - failing)
        errors = s.app.metrics.value("agent_errors", agent="consume", policy=policy.value)
        assert errors == len(failing)
        # Restarted after every failure: one start per task, one more per failed record.
        assert len(s.starts) == PARTITIONS + len(failing)
        assert _caught_up(s)
        assert s.app.metrics.value("bad_records", topic=TOPIC, policy="fail") == 0
        if policy is ErrorPolicy.SKIP:
            assert sorted(_skipped(logs)) == sorted((p, o, "agent consume") for p, o in failing)
            return
        dead = _dead_letters(s)
        assert set(dead) == failing
        by_where = {i.where: i for i in inputs}
        for where, record in dead.items():
            _check_dead_letter(record, by_where[where], "agent consume")
            reason = dict(record.headers)["streamkit.error.reason"].decode()
            assert reason == f"ValueError: boom at {where[0]}@{where[1]}"


@pytest.mark.parametrize("policy", [ErrorPolicy.SKIP, ErrorPolicy.DEAD_LETTER])
@hypothesis_settings
@given(spec=agent_batches, tuning=tunings)
def test_agent_errors_are_handled_and_the_agent_restarted(
    policy: ErrorPolicy, spec: list[tuple[int, bool]], tuning: Tuning
) -> None:
    asyncio.run(_agent_error_case(spec, policy, tuning))


async def test_agent_error_under_fail_policy_stops_at_the_record() -> None:
    """The default for agents: stop with AgentError, commit everything before the record."""
    with scenario(topic_policy=ErrorPolicy.FAIL, tuning=(3, 2)) as s:
        _, failing = _agent_inputs(s, [(0, False), (0, False), (1, False), (0, True), (0, False)])
        assert failing == {(0, 2)}
        with pytest.raises(sk.AgentError) as info:
            async with running(s.app):
                await wait_for(
                    lambda: s.app.metrics.value("agent_errors", agent="consume", policy="fail") == 1
                )
        error = info.value
        assert (error.topic, error.partition, error.offset) == (TOPIC, 0, 2)
        assert error.stage == "agent consume"
        assert str(error) == f"agent consume failed on {TOPIC}[0]@2: ValueError: boom at 0@2"
        assert isinstance(error.__cause__, ValueError)
        assert _committed(s)[0] == 2  # a restart retries the failed record
        assert {(e.partition, e.offset) for e in s.seen if e.partition == 0} == {(0, 0), (0, 1)}
        assert len(s.starts) == PARTITIONS  # no restart under `fail`
        assert f"{s.app.id}-dlq" not in s.broker.topics()
