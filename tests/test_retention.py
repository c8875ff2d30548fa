"""When retention deletes records the app has not consumed (the memory broker deletes
records below an offset as Kafka's retention and DeleteRecords do)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, running, wait_for

import streamkit as sk
from streamkit.runtime.worker import Worker
from streamkit.transport import TopicPartition


def numbers_app(url: str, seen: list[int], **settings: Any) -> tuple[sk.App, sk.Topic]:
    app = sk.App("retained", broker=url, **settings)
    numbers = app.topic("numbers", value_type=int, partitions=1)

    @app.agent(numbers)
    async def consume(stream: sk.Stream) -> None:
        async for value in stream:
            seen.append(value)

    return app, numbers


async def consumed_ten_then_twenty_more_with_fifteen_deleted(url: str) -> None:
    seen: list[int] = []
    app, numbers = numbers_app(url, seen)
    for i in range(10):
        await app.send(numbers, key="k", value=i)
    async with running(app):
        await wait_for(lambda: committed(app, numbers) == {0: 10})
    for i in range(10, 30):
        await app.send(numbers, key="k", value=i)
    sk.MemoryBroker.for_url(url).delete_records(TopicPartition("numbers", 0), 15)


@pytest.mark.parametrize(
    ("policy", "expected"), [("earliest", list(range(15, 30))), ("latest", [])]
)
async def test_a_committed_offset_below_the_log_start_follows_the_policy(
    memory_url: str, policy: str, expected: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    await consumed_ten_then_twenty_more_with_fifteen_deleted(memory_url)
    seen: list[int] = []
    app, numbers = numbers_app(memory_url, seen, auto_offset_reset=policy)
    with caplog.at_level(logging.WARNING, logger="streamkit.offsets"):
        async with running(app) as worker:
            await wait_for(lambda: bool(worker.coordinator and worker.coordinator.tasks))
            if expected:
                await wait_for(lambda: seen == expected)
            await app.send(numbers, key="k", value=99)
            await wait_for(lambda: seen[-1:] == [99])
    assert seen == [*expected, 99]
    assert (
        "committed offset 10 of numbers[0] is below the log start 15: retention deleted "
        f"5 records before they were processed; auto_offset_reset={policy} resumes at "
        f"{15 if policy == 'earliest' else 30}"
    ) in caplog.text


async def test_auto_offset_reset_fail_stops_with_both_offsets(memory_url: str) -> None:
    await consumed_ten_then_twenty_more_with_fifteen_deleted(memory_url)
    app, _ = numbers_app(memory_url, [], auto_offset_reset="fail")
    with pytest.raises(
        sk.TransportError,
        match=r"committed offset 10 of numbers\[0\] is below "
        r"the log start 15: retention deleted 5 records",
    ):
        await Worker(app).run()


async def test_a_changelog_that_moved_past_the_state_file_means_a_full_replay(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def counting_app() -> tuple[sk.App, sk.Topic, list[tuple[str, int]]]:
        out: list[tuple[str, int]] = []
        app = sk.App("moved", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.01)
        words = app.topic("words", value_type=str, partitions=1)
        counts = app.table("counts", default=int)

        @app.agent(words)
        async def count(stream: sk.Stream) -> None:
            async for word in stream.items():
                counts[word[0]] += 1
                out.append((word[0], counts[word[0]]))

        return app, words, out

    app, words, out = counting_app()
    for word in ["a", "b", "a"]:
        await app.send(words, key=word, value=word)
    async with running(app):
        await wait_for(lambda: len(out) == 3)
    broker = sk.MemoryBroker.for_url(memory_url)
    changelog = TopicPartition("moved-counts-changelog", 0)
    checkpoint = broker.end_offset(changelog)
    # Another worker went on (the changelog grew) and retention then deleted past
    # what this worker's file reflects.
    broker.append(changelog.topic, 0, b"a", b"7")
    broker.append(changelog.topic, 0, b"c", b"1")
    broker.delete_records(changelog, checkpoint + 1)
    kept = {r.key.decode(): int(r.value) for r in broker.records(changelog.topic, 0)}
    assert kept == {"c": 1}

    app2, words2, out2 = counting_app()
    await app2.send(words2, key="a", value="a")
    await app2.send(words2, key="b", value="b")
    with caplog.at_level(logging.WARNING, logger="streamkit.restore"):
        async with running(app2):
            await wait_for(lambda: len(out2) == 2)
    assert "replaying the whole changelog" in caplog.text
    # The file was rebuilt from what the changelog still holds (c=1 only), not
    # trusted where the changelog no longer reaches.
    assert out2 == [("a", 1), ("b", 1)]
