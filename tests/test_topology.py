from typing import Any

import pytest
from helpers import read, running, wait_for

import streamkit as sk
from streamkit.runtime.worker import Worker
from streamkit.transport import TopicPartition


def make_app() -> tuple[sk.App, dict[str, sk.Topic]]:
    app = sk.App("topo", broker="memory://topo")
    t = {
        "a": app.topic("a", partitions=4),
        "b": app.topic("b", partitions=2),
        "c": app.topic("c", partitions=3),
        "out": app.topic("out", partitions=1),
    }

    @app.agent([t["a"], t["b"]], sink=t["out"])
    async def joiner(stream: Any) -> Any:
        async for v in stream:
            yield v

    @app.agent(t["c"])
    async def reader(stream: Any) -> None:
        async for _ in stream:
            pass

    @app.agent(t["b"])
    async def second_reader_of_b(stream: Any) -> None:
        async for _ in stream:
            pass

    @app.agent(t["out"])
    async def downstream(stream: Any) -> None:
        async for _ in stream:
            pass

    return app, t


def test_subtopologies_are_connected_components() -> None:
    app, _ = make_app()
    subs = app.topology().subtopologies
    assert [[a.name for a in s.agents] for s in subs] == [
        ["joiner", "second_reader_of_b"],
        ["reader"],
        ["downstream"],
    ]
    assert [sorted(t.name for t in s.sources) for s in subs] == [["a", "b"], ["c"], ["out"]]


def test_task_count_is_the_widest_source() -> None:
    app, _ = make_app()
    topology = app.topology()
    assert [str(t) for t in topology.subtopologies[0].task_ids()] == ["0_0", "0_1", "0_2", "0_3"]
    assert topology.subtopologies[0].partitions_of(sk.TaskId(0, 1)) == {
        TopicPartition("a", 1),
        TopicPartition("b", 1),
    }
    # b has two partitions: task 0_3 reads only a[3].
    assert topology.subtopologies[0].partitions_of(sk.TaskId(0, 3)) == {TopicPartition("a", 3)}
    assert topology.task_id_for(TopicPartition("b", 1)) == sk.TaskId(0, 1)
    assert topology.task_id_for(TopicPartition("c", 2)) == sk.TaskId(1, 2)


def test_describe_lists_nodes_and_tasks() -> None:
    app, _ = make_app()
    text = app.topology().describe()
    assert "Sub-topology: 0 (tasks: 0_0, 0_1, 0_2, 0_3)" in text
    assert "Source: source-a (topic: a, partitions: 4)" in text
    assert "Processor: joiner (agent, stores: [])" in text
    assert "Sink: sink-out (topic: out)" in text
    assert "Sub-topology: 2 (tasks: 0_0)" not in text
    assert "Sub-topology: 2 (tasks: 2_0)" in text


def test_agent_declaration_errors_are_clear() -> None:
    app = sk.App("x", broker="memory://x")
    t = app.topic("t")
    with pytest.raises(sk.ConfigError, match="yields records but has no sink"):

        @app.agent(t)
        async def yields(stream: Any) -> Any:
            yield 1

    with pytest.raises(sk.ConfigError, match="has a sink but never yields"):

        @app.agent(t, sink=t)
        async def no_yield(stream: Any) -> None:
            pass

    other = sk.App("y").topic("elsewhere")
    with pytest.raises(sk.ConfigError, match="not declared with this app"):
        app.agent(other)


def test_names_and_settings_are_validated() -> None:
    with pytest.raises(sk.ConfigError, match="not a legal Kafka name"):
        sk.App("bad id!")
    with pytest.raises(sk.ConfigError, match="unknown broker 'redis://x'"):
        sk.App("ok", broker="redis://x")
    app = sk.App("ok")
    with pytest.raises(sk.ConfigError, match="declared twice"):
        app.topic("t", partitions=2)
        app.topic("t", partitions=3)
    with pytest.raises(sk.ConfigError, match="on_error must be one of"):
        app.topic("u", on_error="explode")


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_BROKER", "memory://from-env")
    monkeypatch.setenv("STREAMKIT_COMMIT_INTERVAL_S", "0.25")
    app = sk.App("env")
    assert app.settings.broker == "memory://from-env"
    assert app.settings.commit_interval_s == 0.25
    # Code beats the environment; the CLI's flags beat both.
    assert sk.App("env", broker="memory://code").settings.broker == "memory://code"
    app.configure(broker="kafka://h:9092")
    assert app.settings.broker == "kafka://h:9092"


# Co-partitioning with the broker's counts (issue 16) ---------------------------------


def join_app(url: str, data_dir: Any) -> tuple[sk.App, sk.Topic]:
    """A stream that adopts the broker's count joined with a table declared with 2."""
    app = sk.App("mm", broker=url, data_dir=data_dir)
    orders = app.topic("mm-orders", partitions=None)
    customers = app.topic("mm-customers", partitions=2)
    out = app.topic("mm-out", partitions=2)
    app.stream(orders).join(app.ktable(customers), lambda o, c: f"{o}:{c}").to(out)
    return app, out


async def test_a_join_of_an_adopted_topic_is_checked_with_the_brokers_count(
    memory_url: str, tmp_path: Any
) -> None:
    broker = sk.MemoryBroker.for_url(memory_url)
    broker.create_topic("mm-orders", 2)
    app, out = join_app(memory_url, tmp_path)
    app.topology()  # the broker was not asked yet: nothing to refuse
    await app.send("mm-customers", key="c1", value="Ada")
    await app.send("mm-orders", key="c1", value="o1")
    async with running(app):
        await wait_for(lambda: read(app, out) == [("c1", "o1:Ada")])

    sk.MemoryBroker.reset(memory_url.split("://")[1])
    sk.MemoryBroker.for_url(memory_url).create_topic("mm-orders", 3)
    app3, _ = join_app(memory_url, tmp_path / "3")
    with pytest.raises(sk.TopologyError, match="mm-orders has 3, mm-customers has 2 partitions"):
        await Worker(app3).run()


def shared_table_app(a_partitions: int | None, b_partitions: int | None) -> sk.App:
    app = sk.App("shared", broker="memory://shared-table")
    a = app.topic("a", partitions=a_partitions)
    b = app.topic("b", partitions=b_partitions)
    totals = app.table("totals", default=int)

    @app.agent(a)
    async def add(stream: Any) -> None:
        async for key in stream:
            totals[key] += 1

    @app.agent(b)
    async def subtract(stream: Any) -> None:
        async for key in stream:
            totals[key] -= 1

    return app


def test_a_table_shared_across_topics_of_4_and_3_partitions_is_refused_up_front() -> None:
    with pytest.raises(sk.TopologyError) as refused:
        shared_table_app(4, 3).topology()
    message = str(refused.value)
    assert "table 'totals' is shared across topics of different partition counts" in message
    assert "a (4 partitions, read by add), b (3 partitions, read by subtract)" in message


async def test_a_shared_table_is_checked_with_the_brokers_counts(tmp_path: Any) -> None:
    sk.MemoryBroker.reset("shared-table")
    sk.MemoryBroker.for_url("memory://shared-table").create_topic("b", 3)
    app = shared_table_app(4, None)
    app.configure(data_dir=str(tmp_path))
    app.topology()  # b's count is the broker's, not known yet
    try:
        with pytest.raises(sk.TopologyError, match=r"b \(3 partitions, read by subtract\)"):
            await Worker(app).run()
    finally:
        sk.MemoryBroker.reset("shared-table")


def test_inputs_of_different_partitioners_cannot_share_a_table_or_join() -> None:
    app = sk.App("mixed")
    java = app.topic("java", partitions=4)
    rdkafka = app.topic("rdkafka", partitions=4, partitioner="crc32")
    totals = app.table("totals", default=int)

    @app.agent([java, rdkafka])
    async def add(stream: Any) -> None:
        async for key in stream:
            totals[key] += 1

    with pytest.raises(sk.TopologyError) as shared:
        app.topology()
    assert (
        "table 'totals' is shared across topics of different partitioners: java (partitioner "
        "murmur2, read by add), rdkafka (partitioner crc32, read by add)"
    ) in str(shared.value)

    joins = sk.App("mixed-join")
    left = joins.topic("left", partitions=2, partitioner="crc32")
    right = joins.topic("right", partitions=2)
    joins.stream(left).join(joins.ktable(right), lambda a, b: (a, b)).to(joins.topic("out"))
    with pytest.raises(sk.TopologyError, match="but left uses crc32, right uses murmur2"):
        joins.topology()
