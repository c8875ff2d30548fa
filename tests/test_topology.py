from typing import Any

import pytest

import streamkit as sk
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
