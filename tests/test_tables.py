"""Tables on the memory broker: SQLite shards, changelogs, restore, partition checks."""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, read, running, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit.errors import TransportError
from streamkit.runtime.worker import Worker
from streamkit.transport.memory import MemoryReader


class Click(BaseModel):
    user: str
    page: str


USERS = [f"user{i}" for i in range(13)]


def design_app(url: str, data_dir: Path, **settings: Any) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """The example of DESIGN.md, verbatim but for the broker and data dir."""
    app = sk.App("clicks", broker=url, data_dir=data_dir, **settings)
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=4)
    views = app.topic("views-per-user", key_type=str, value_type=int)
    counts = app.table("view-counts", default=int)

    @app.agent(clicks, sink=views)
    async def count_views(stream: sk.Stream) -> Any:
        async for user, _click in stream.items():
            counts[user] += 1
            yield user, counts[user]

    return app, clicks, views


async def send(app: sk.App, topic: sk.Topic, n: int, start: int = 0) -> Counter[str]:
    sent: Counter[str] = Counter()
    for i in range(start, start + n):
        user = USERS[i % len(USERS)]
        await app.send(topic, key=user, value=Click(user=user, page="/"))
        sent[user] += 1
    return sent


def stored_counts(data_dir: Path, app_id: str, table: str) -> dict[str, int]:
    """What the SQLite shards hold, read as a user inspecting the files would."""
    out: dict[str, int] = {}
    for path in (data_dir / app_id).glob(f"*/{table}.sqlite"):
        with closing(sqlite3.connect(path)) as db:
            for key, value in db.execute("SELECT key, value FROM kv"):
                out[key.decode()] = int(value)
    return out


def latest_outputs(app: sk.App, topic: sk.Topic) -> dict[str, int]:
    out: dict[str, int] = {}
    for user, count in read(app, topic):
        out[user] = max(out.get(user, 0), count)
    return out


async def count_clicks(url: str, data_dir: Path, n: int) -> tuple[sk.App, Counter[str]]:
    """Run the design example over `n` clicks until every count is out; it then stops."""
    app, clicks, views = design_app(url, data_dir)
    sent = await send(app, clicks, n)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == n)
    return app, sent


def changelog(url: str, app: sk.App, table: str) -> list[sk.transport.memory.MemoryRecord]:
    return sk.MemoryBroker.for_url(url).records(f"{app.id}-{table}-changelog")


async def test_design_example_counts_views(memory_url: str, tmp_path: Path) -> None:
    app, clicks, views = design_app(memory_url, tmp_path)
    sent = await send(app, clicks, 400)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 400)
    assert latest_outputs(app, views) == dict(sent)
    assert stored_counts(tmp_path, "clicks", "view-counts") == dict(sent)
    # One changelog partition per task, each key on its own task's partition.
    broker = sk.MemoryBroker.for_url(memory_url)
    assert broker.partition_count("clicks-view-counts-changelog") == 4
    for record in changelog(memory_url, app, "view-counts"):
        assert record.partition == sk.partitioner.partition_for(record.key, 4)
    described = app.topology().describe()
    assert "Processor: count_views (agent, stores: [view-counts])" in described


async def test_write_behind_sends_one_changelog_record_per_key_per_commit(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks, views = design_app(memory_url, tmp_path, commit_interval_s=3600)
    await send(app, clicks, 1300)  # 100 updates of each of 13 keys
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 1300)
    # Nothing was committed before the graceful stop: one commit, one record per key.
    records = changelog(memory_url, app, "view-counts")
    assert sorted(r.key.decode() for r in records) == sorted(USERS)
    assert {int(r.value) for r in records} == {100}


async def test_restart_resumes_from_the_local_checkpoint(memory_url: str, tmp_path: Path) -> None:
    _, sent = await count_clicks(memory_url, tmp_path, 260)

    app2, clicks2, views2 = design_app(memory_url, tmp_path)
    sent += await send(app2, clicks2, 130, start=260)
    async with running(app2) as worker:
        await wait_for(lambda: len(read(app2, views2)) == 390)
        restored = sum(t.restored_records for t in worker.coordinator.tasks.values())  # type: ignore[union-attr]
    assert restored == 0  # the SQLite files were current
    assert latest_outputs(app2, views2) == dict(sent)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
async def test_lost_or_corrupt_state_is_rebuilt_from_the_changelog(
    memory_url: str, tmp_path: Path, damage: str
) -> None:
    app, sent = await count_clicks(memory_url, tmp_path, 260)
    for path in (tmp_path / "clicks").glob("*/view-counts.sqlite*"):
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(b"this is not a database" * 100)

    app2, clicks2, views2 = design_app(memory_url, tmp_path)
    sent += await send(app2, clicks2, 130, start=260)
    async with running(app2) as worker:
        await wait_for(lambda: len(read(app2, views2)) == 390)
        restored = sum(t.restored_records for t in worker.coordinator.tasks.values())  # type: ignore[union-attr]
    assert restored == len(changelog(memory_url, app, "view-counts")) - 13  # all but the new
    assert latest_outputs(app2, views2) == dict(sent)
    assert stored_counts(tmp_path, "clicks", "view-counts") == dict(sent)


async def test_state_beyond_the_changelog_is_discarded(tmp_path: Path) -> None:
    # The SQLite files say "offset 20 of the changelog", but this broker's changelog
    # is new and empty (a recreated topic): the files must not be trusted.
    sk.MemoryBroker.reset("old")
    sk.MemoryBroker.reset("new")
    app, clicks, views = design_app("memory://old", tmp_path)
    await send(app, clicks, 260)
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 260)

    app2, clicks2, views2 = design_app("memory://new", tmp_path)
    sent = await send(app2, clicks2, 26)
    async with running(app2):
        await wait_for(lambda: len(read(app2, views2)) == 26)
    assert latest_outputs(app2, views2) == dict(sent)  # counted from zero, not from 20
    for name in ("old", "new"):
        sk.MemoryBroker.reset(name)


async def test_a_key_of_another_partition_is_refused(memory_url: str, tmp_path: Path) -> None:
    app = sk.App("wrong", broker=memory_url, data_dir=tmp_path)
    pages = app.topic("pages", key_type=str, value_type=str, partitions=4)
    per_page = app.table("per-page", default=int)

    @app.agent(pages)
    async def count_pages(stream: sk.Stream) -> None:
        async for page in stream:  # keyed by user, but the table is keyed by page
            per_page[page] += 1

    for i in range(40):
        await app.send(pages, key=f"user{i}", value=f"/page{i % 7}")
    with pytest.raises(sk.AgentError, match="Re-key the stream first") as failure:
        await Worker(app).run()
    assert "table 'per-page'" in str(failure.value)


async def test_table_api(memory_url: str, tmp_path: Path) -> None:
    app = sk.App("api", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.01)
    ops = app.topic("ops", key_type=str, value_type=Any, partitions=1)
    table = app.table("kv", value_type=int)
    answers: list[Any] = []

    @app.agent(ops)
    async def apply(stream: sk.Stream) -> None:
        async for key, op in stream.items():
            if op == "set":
                table[key] = len(key)
            elif op == "del":
                del table[key]
            elif op == "check":
                answers.append(
                    (
                        key in table,
                        table.get(key),
                        table.get("zz", -1),
                        list(table.items()),
                        list(table.range("b", "d")),
                    )
                )

    for key in ["a", "b", "c", "d"]:
        await app.send(ops, key=key, value="set")
    await app.send(ops, key="a", value="check")
    await app.send(ops, key="c", value="del")
    await app.send(ops, key="c", value="check")
    async with running(app):
        await wait_for(lambda: len(answers) == 2)
    assert answers[0] == (
        True,
        1,
        -1,
        [("a", 1), ("b", 1), ("c", 1), ("d", 1)],
        [("b", 1), ("c", 1)],
    )
    assert answers[1] == (False, None, -1, [("a", 1), ("b", 1), ("d", 1)], [("b", 1)])
    # The deletion reached the changelog as a tombstone.
    records = changelog(memory_url, app, "kv")
    assert [r.value for r in records if r.key == b"c"][-1] is None


def test_table_outside_an_agent_is_an_error(tmp_path: Path) -> None:
    app = sk.App("outside", data_dir=tmp_path)
    table = app.table("t", default=int)
    with pytest.raises(sk.errors.StateError, match="used outside an agent"):
        table["x"] += 1


def test_tables_join_agents_into_one_subtopology_and_size_the_changelog() -> None:
    app = sk.App("bind")
    a = app.topic("a", partitions=3)
    b = app.topic("b", partitions=3)
    shared = app.table("shared")

    @app.agent(a)
    async def one(stream: sk.Stream) -> None:
        async for k, v in stream.items():
            shared[k] = v

    @app.agent(b)
    async def two(stream: sk.Stream) -> None:
        async for k in stream:
            shared.get(k)

    topology = app.topology()
    assert len(topology.subtopologies) == 1
    assert [t.name for t in topology.subtopologies[0].tables] == ["shared"]
    assert shared.changelog.partitions == 3

    mismatched = sk.App("bind2")
    c = mismatched.topic("c", partitions=4)
    sized = mismatched.table("sized", partitions=2)

    @mismatched.agent(c, tables=[sized])
    async def three(stream: sk.Stream) -> None:
        async for _ in stream:
            pass

    with pytest.raises(sk.TopologyError, match="declared with 2 partitions but sub-topology 0"):
        mismatched.topology()


async def test_ttl_forgets_keys_and_tombstones_them(memory_url: str, tmp_path: Path) -> None:
    app = sk.App("ttl", broker=memory_url, data_dir=tmp_path, commit_interval_s=0.02)
    ops = app.topic("ops", key_type=str, value_type=str, partitions=1)
    recent = app.table("recent", value_type=int, ttl=0.3)
    answers: list[tuple[str, Any]] = []

    @app.agent(ops)
    async def apply(stream: sk.Stream) -> None:
        async for key, op in stream.items():
            if op == "set":
                recent[key] = 1
            else:
                answers.append((key, recent.get(key)))

    await app.send(ops, key="old", value="set")
    async with running(app):
        await wait_for(
            lambda: stored_counts(tmp_path, "ttl", "recent") == {"old": 1}, what="the first commit"
        )

        async def expired() -> bool:
            await app.send(ops, key="old", value="check")
            await app.send(ops, key="new", value="set")
            return any(k == "old" and v is None for k, v in answers)

        from helpers import eventually

        await eventually(expired, what="the TTL to pass")
        await wait_for(
            lambda: any(
                r.key == b"old" and r.value is None for r in changelog(memory_url, app, "recent")
            ),
            what="a tombstone for the expired key",
        )
    assert stored_counts(tmp_path, "ttl", "recent").get("old") is None


async def test_a_full_write_behind_cache_commits_early(memory_url: str, tmp_path: Path) -> None:
    # Commits are an hour apart, but 1 KB values overflow a 20 KB cache: the task
    # commits (changelog first, then input offsets) long before the interval.
    app = sk.App(
        "bulky",
        broker=memory_url,
        data_dir=tmp_path,
        commit_interval_s=3600,
        store_cache_max_bytes=20_000,
        max_poll_records=10,
    )
    docs = app.topic("docs", key_type=str, value_type=str, partitions=1)
    latest = app.table("latest", value_type=str)
    seen: list[str] = []

    @app.agent(docs)
    async def keep(stream: sk.Stream) -> None:
        async for key, text in stream.items():
            latest[key] = text
            seen.append(key)

    for i in range(300):
        await app.send(docs, key=f"doc{i}", value="x" * 1000)
    async with running(app):
        await wait_for(lambda: len(seen) == 300)
        early = committed(app, docs)[0]
        logged = len(changelog(memory_url, app, "latest"))
    assert early is not None and early >= 200
    assert logged >= 200  # the changelog got the changes before the offsets moved


class Recorder(sk.RestoreListener):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def on_restore_start(self, *args: Any) -> None:
        self.calls.append(("start", *args))

    async def on_batch_restored(self, *args: Any) -> None:
        self.calls.append(("batch", *args))

    async def on_restore_end(self, *args: Any) -> None:
        self.calls.append(("end", *args))


async def test_a_restore_listener_hears_each_store_restore_from_start_to_end(
    memory_url: str, tmp_path: Path
) -> None:
    app, sent = await count_clicks(memory_url, tmp_path, 260)
    for path in (tmp_path / "clicks").glob("*/view-counts.sqlite*"):
        path.unlink()
    ends = Counter(r.partition for r in changelog(memory_url, app, "view-counts"))

    app2, clicks2, views2 = design_app(memory_url, tmp_path, max_poll_records=2)
    heard = Recorder()
    app2.set_restore_listener(heard)
    sent += await send(app2, clicks2, 130, start=260)
    async with running(app2):
        await wait_for(lambda: len(read(app2, views2)) == 390)
    by_task: dict[str, list[tuple[Any, ...]]] = {}
    for call in heard.calls:
        by_task.setdefault(str(call[1]), []).append(call)
    assert sorted(by_task) == [f"0_{p}" for p in sorted(ends)]
    tp = sk.transport.TopicPartition
    for task, calls in by_task.items():
        p = int(task.split("_")[1])
        changelog_tp = tp("clicks-view-counts-changelog", p)
        assert calls[0][2:] == ("view-counts", changelog_tp, 0, ends[p])
        assert calls[-1][2:] == ("view-counts", changelog_tp, ends[p])
        batches = [c for c in calls[1:-1] if c[0] == "batch"]
        assert len(batches) == len(calls) - 2
        # Batches of up to 10 records (5 x max_poll_records), offsets rising to the end.
        assert [c[4] for c in batches] == sorted({c[4] for c in batches})
        assert batches[-1][4] == ends[p]
        assert sum(c[5] for c in batches) == ends[p]
        assert max(c[5] for c in batches) <= 10
    assert latest_outputs(app2, views2) == dict(sent)


async def test_a_restore_waits_for_a_broker_that_is_away_and_then_completes(
    memory_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The restore's reader cannot reach the broker twice (as when it is down): the
    task waits, says so once, restores the counts, and goes on; the worker never stops."""
    app, sent = await count_clicks(memory_url, tmp_path, 40)
    refusals = [TransportError("connection refused (simulated)")] * 2
    start = MemoryReader.start

    async def refused_twice(self: MemoryReader) -> None:
        if refusals:
            raise refusals.pop()
        await start(self)

    monkeypatch.setattr(MemoryReader, "start", refused_twice)
    for path in (tmp_path / app.id).glob("*/view-counts.sqlite*"):
        path.unlink()  # a full restore from the changelog, once the broker answers
    again, clicks, views = design_app(memory_url, tmp_path)
    async with running(again):
        await send(again, clicks, 1, start=0)
        user = USERS[0]
        await wait_for(
            lambda: latest_outputs(again, views)[user] == sent[user] + 1, what="the next count"
        )
    assert not refusals
    assert caplog.text.count("restoring waits for the broker") >= 1
    assert stored_counts(tmp_path, app.id, "view-counts")[user] == sent[user] + 1


def _reread_app(url: str, data_dir: Path, reads: list[int]) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """One partition, a cache of 10 keys: each record's key is read from the file."""
    app = sk.App(
        "reread", broker=url, data_dir=data_dir, store_cache_max_keys=10, max_poll_records=100
    )
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=1)
    views = app.topic("views", key_type=str, value_type=int, partitions=1)
    counts = app.table("counts", default=int)
    other = app.table("by-page", default=int)  # keyed by page, not by the records' keys

    @app.agent(clicks, sink=views)
    async def count(stream: sk.Stream) -> Any:
        async for user, click in stream.items():
            if click.page == "/forget":
                del counts[user]
                continue
            counts[user] += 1
            other[click.page] += 1
            reads.append(other[click.page])
            yield user, counts[user]

    return app, clicks, views


async def test_state_beyond_the_cache_is_read_a_batch_at_a_time(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,000 keys counted once, then each again (and one forgotten first, one new):
    # every read of the second run misses the cache and goes to the file, which
    # after the first batch serves each batch's keys in a few queries.
    users = [f"u{i:04d}" for i in range(1000)]
    reads: list[int] = []
    app, clicks, views = _reread_app(memory_url, tmp_path, reads)
    for user in users:
        await app.send(clicks, key=user, value=Click(user=user, page="/a"))
    async with running(app):
        await wait_for(lambda: len(read(app, views)) == 1000)

    single_reads: list[bytes] = []
    get = sk.state.sqlite_store.SqliteStore.get

    def counting_get(self: Any, key: bytes, since_ms: int = 0) -> bytes | None:
        single_reads.append(key)
        return get(self, key, since_ms)

    monkeypatch.setattr(sk.state.sqlite_store.SqliteStore, "get", counting_get)
    app2, clicks2, views2 = _reread_app(memory_url, tmp_path, reads)
    await app2.send(clicks2, key="u0500", value=Click(user="u0500", page="/forget"))
    for user in [*users, "new"]:
        await app2.send(clicks2, key=user, value=Click(user=user, page="/b"))
    async with running(app2):
        await wait_for(lambda: len(read(app2, views2)) == 2001)  # the first 1,000 too
    expected = {user: 2 for user in users} | {"u0500": 1, "new": 1}
    assert dict(read(app2, views2)[1000:]) == expected
    assert stored_counts(tmp_path, "reread", "counts") == expected
    # The page table, which no record's key names, gave the right counts throughout.
    assert reads[-1] == 1001 and stored_counts(tmp_path, "reread", "by-page")["/b"] == 1001
    # One batch of single reads showed the state outgrew the cache; later batches were
    # read ahead. (The page table's key is in the cache: it reads the file once.)
    assert len([k for k in single_reads if k.startswith(b"u")]) <= 200


async def test_a_new_table_reads_nothing_from_its_file_until_it_holds_rows(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh store has no rows: its first keys are new without a read of the file. Once
    # the file holds rows (a restart on it, or a restore into a new one), keys that memory
    # does not hold are read from it again.
    file_reads: list[bytes] = []
    get, get_many = (
        sk.state.sqlite_store.SqliteStore.get,
        sk.state.sqlite_store.SqliteStore.get_many,
    )

    def counting_get(self: Any, key: bytes, since_ms: int = 0) -> bytes | None:
        file_reads.append(key)
        return get(self, key, since_ms)

    def counting_get_many(self: Any, keys: Any, since_ms: int = 0) -> dict[bytes, bytes]:
        file_reads.extend(keys)
        return get_many(self, keys, since_ms)

    monkeypatch.setattr(sk.state.sqlite_store.SqliteStore, "get", counting_get)
    monkeypatch.setattr(sk.state.sqlite_store.SqliteStore, "get_many", counting_get_many)
    users = [f"u{i:03d}" for i in range(300)]

    async def count_each_once(data_dir: Path, rounds: int) -> None:
        # A commit interval longer than the run: the store holds no rows while it counts.
        app, clicks, views = design_app(memory_url, data_dir, commit_interval_s=60)
        for user in users:
            await app.send(clicks, key=user, value=Click(user=user, page="/"))
        async with running(app):
            await wait_for(lambda: len(read(app, views)) == rounds * len(users))
        assert dict(read(app, views)[-len(users) :]) == {user: rounds for user in users}

    await count_each_once(tmp_path / "a", 1)
    assert file_reads == []
    await count_each_once(tmp_path / "a", 2)  # a restart on its files
    assert len(file_reads) >= len(users)
    file_reads.clear()
    await count_each_once(tmp_path / "b", 3)  # a new data dir: restored from the changelog
    assert len(file_reads) >= len(users)
    assert stored_counts(tmp_path / "b", "clicks", "view-counts") == {user: 3 for user in users}


async def test_a_restore_reaches_the_file_in_parts_and_ends_at_the_changelog_end(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 users over 4 tasks, a write-behind cache of 20 keys, fetches of 50 records: a
    # task restores its ~150 changelog records in several writes, each with the offset it
    # reaches, the last at the changelog's end, and the counts go on from there.
    users = [f"u{i:03d}" for i in range(300)]
    settings = {"store_cache_max_keys": 20, "max_poll_records": 10}

    async def count_each_once(data_dir: Path, rounds: int) -> sk.App:
        app, clicks, views = design_app(memory_url, data_dir, **settings)
        for user in users:
            await app.send(clicks, key=user, value=Click(user=user, page="/"))
        async with running(app):
            await wait_for(lambda: len(read(app, views)) == rounds * len(users))
        assert dict(read(app, views)[-len(users) :]) == {user: rounds for user in users}
        return app

    app = await count_each_once(tmp_path / "a", 1)
    await count_each_once(tmp_path / "a", 2)
    broker = sk.MemoryBroker.for_url(memory_url)
    topic = f"{app.id}-view-counts-changelog"
    ends = {f"0_{p}": len(broker.records(topic, p)) for p in range(4)}
    writes: list[tuple[str, int | None]] = []
    write = sk.state.sqlite_store.SqliteStore.write

    def recording_write(self: Any, changes: Any, checkpoint: int | None) -> None:
        writes.append((self.path.parent.name, checkpoint))
        write(self, changes, checkpoint)

    monkeypatch.setattr(sk.state.sqlite_store.SqliteStore, "write", recording_write)
    await count_each_once(tmp_path / "b", 3)  # a new data dir: restored first
    assert stored_counts(tmp_path / "b", app.id, "view-counts") == {user: 3 for user in users}
    for task, end in ends.items():
        restored = [at for name, at in writes if name == task and at is not None and at <= end]
        assert len(restored) >= 2 and restored == sorted(restored) and restored[-1] == end


# Values are checked, and converted as a restore would read them, at assignment --------


def typed_app(url: str, data_dir: Path, app_id: str) -> tuple[sk.App, sk.Topic]:
    app = sk.App(app_id, broker=url, data_dir=data_dir)
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=2)
    counts = app.table("counts", value_type=int, default=int)
    notes = app.table("notes")  # untyped: JSON

    @app.agent(clicks)
    async def count(stream: sk.Stream) -> None:
        async for user, what in stream.items():
            if what == "function":
                notes[user] = len
            else:
                counts[user] = what

    return app, clicks


async def test_a_value_of_the_wrong_type_fails_at_its_assignment(
    memory_url: str, tmp_path: Path
) -> None:
    app, clicks = typed_app(memory_url, tmp_path, "typed")
    await app.send(clicks, key="ada", value="not an int", partition=1)
    with pytest.raises(sk.AgentError) as failure:
        await Worker(app).run()
    assert str(failure.value) == (
        "agent count failed on clicks[1]@0: StateError: table 'counts': cannot store the "
        "value for key 'ada': expected int, got str"
    )
    app, clicks = typed_app(f"{memory_url}-2", tmp_path, "untyped")
    await app.send(clicks, key="bob", value="function", partition=0)
    with pytest.raises(sk.AgentError) as failure:
        await Worker(app).run()
    assert str(failure.value).startswith(
        "agent count failed on clicks[0]@0: StateError: table 'notes': cannot store the value "
        "for key 'bob': a builtin_function_or_method cannot be stored as JSON"
    )
    sk.MemoryBroker.reset(f"{memory_url}-2".split("://")[1])


class Visit(BaseModel):
    at: datetime
    pages: tuple[str, ...]


def kept_values_app(url: str, data_dir: Path) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """Stores values on "store", then reports their types on "read"."""
    app = sk.App("kept", broker=url, data_dir=data_dir)
    commands = app.topic("commands", key_type=str, value_type=str)
    seen = app.topic("seen", key_type=str, value_type=str)
    untyped = app.table("untyped")
    typed = app.table("typed", value_type=set[int])
    visits = app.table("visits", value_type=Visit)

    @app.agent(commands, sink=seen)
    async def keep(stream: sk.Stream) -> Any:
        async for command in stream:
            if command == "store":
                untyped["set"] = {1, 2}
                untyped["datetime"] = datetime(2024, 5, 1, 12, 30)
                untyped["tuple"] = (1, "a")
                typed["set"] = [3, 3, 4]
                visits["v"] = {"at": "2024-05-01T12:30:00", "pages": ["/a"]}
            read_back = [
                untyped["set"],
                untyped["datetime"],
                untyped["tuple"],
                typed["set"],
                visits["v"].at,
                visits["v"].pages,
            ]
            yield command, repr(read_back)

    return app, commands, seen


async def test_a_value_reads_back_the_same_in_process_and_after_a_restart_or_restore(
    memory_url: str, tmp_path: Path
) -> None:
    expected = repr(
        [
            [1, 2],
            "2024-05-01T12:30:00",
            [1, "a"],
            {3, 4},
            datetime(2024, 5, 1, 12, 30),
            ("/a",),
        ]
    )
    app, commands, seen = kept_values_app(memory_url, tmp_path)
    await app.send(commands, key="k", value="store")
    async with running(app):
        await wait_for(lambda: len(read(app, seen)) == 1)
    assert read(app, seen) == [("store", expected)]  # in the process that stored them

    app2, commands2, seen2 = kept_values_app(memory_url, tmp_path)  # restart
    await app2.send(commands2, key="k", value="read")
    async with running(app2):
        await wait_for(lambda: len(read(app2, seen2)) == 2)

    for path in (tmp_path / "kept").glob("*/*.sqlite*"):
        path.unlink()  # restore from the changelogs
    app3, commands3, seen3 = kept_values_app(memory_url, tmp_path)
    await app3.send(commands3, key="k", value="read")
    async with running(app3):
        await wait_for(lambda: len(read(app3, seen3)) == 3)
    assert read(app3, seen3) == [("store", expected), ("read", expected), ("read", expected)]
