"""The DSL with real worker processes on a real broker: two workers share a
repartitioned count and a regrouped KTable, one is killed with SIGKILL, and the
survivor takes its tasks over with their state restored.

Apps (tests/apps): `sk_dsl_counts` counts input values per user through the
repartition topic `<app id>-by-user-repartition` (sub-topology 0 writes it, 1 reads
it and counts); both sub-topologies stamp their output with the record they came
from and the worker, so the test can tell what the killed worker had done.
`sk_dsl_ktable` counts users per city from a KTable of user -> city.
Each test has its own app id (= consumer group) and topics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer
from cluster import (
    Cluster,
    Feeder,
    Produced,
    create_topic,
    end_offsets,
    ends_of,
    partitions_of,
    produce,
    read_topic,
    servers,
    uncommitted_window,
    wait_for_commits,
)

from streamkit.partitioner import partition_for

PARTITIONS = 4
TASKS = frozenset(f"{sub}_{p}" for sub in (0, 1) for p in range(PARTITIONS))
USERS = 41  # as in sk_dsl_counts
RATE = 400

pytestmark = pytest.mark.timeout(150)


@dataclass
class Names:
    url: str
    app_id: str
    input: str
    output: str

    @property
    def env(self) -> dict[str, str]:
        return {"SKT_APP_ID": self.app_id, "SKT_INPUT": self.input, "SKT_OUTPUT": self.output}

    def internal(self, name: str, kind: str) -> str:
        return f"{self.app_id}-{name}-{kind}"

    async def create_topics(self) -> None:
        await create_topic(self.url, self.input, PARTITIONS)
        await create_topic(self.url, self.output, PARTITIONS)

    async def settle(
        self, running: Cluster, produced: Sequence[Produced], repartition: str
    ) -> None:
        """Until the group committed every input, then every record of the repartition
        topic (written by then): all output is in."""
        await wait_for_commits(
            self.url,
            self.app_id,
            self.input,
            ends_of(produced, PARTITIONS),
            timeout=60,
            details=running.output,
        )
        # An empty partition has nothing to commit (the group reports -1 for it).
        ends = {
            p: end or -1
            for p, end in (await end_offsets(self.url, repartition, PARTITIONS)).items()
        }
        await wait_for_commits(
            self.url, self.app_id, repartition, ends, timeout=60, details=running.output
        )

    async def changelog_values(self, store: str) -> dict[str, int]:
        values: dict[str, int] = {}
        records = await read_topic(self.url, self.internal(store, "changelog"), PARTITIONS)
        for r in records:
            assert r.key is not None
            if r.value is None:
                values.pop(r.key.decode(), None)
            else:
                # Aggregates are timestamped rows: `timestamp (8 bytes) | value`.
                values[r.key.decode()] = int(r.value[8:])
        return values


@pytest.fixture
def names(kafka_url: str, topic_name: Callable[[str], str]) -> Names:
    return Names(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def key_of(i: int) -> bytes:
    return b"k-%d" % (i % 97)


def user_of(i: int) -> str:
    return f"user-{i % USERS}"


# kill -9 during a repartitioned count -----------------------------------------------


@dataclass(frozen=True)
class Forwarded:
    """A record of the repartition topic: which input it came from, who sent it."""

    user: str
    partition: int
    offset: int
    input_partition: int
    input_offset: int
    worker: str


@dataclass(frozen=True)
class Counted:
    """An output record: a user's count after one repartition record, and who counted."""

    user: str
    count: int
    from_partition: int
    from_offset: int
    worker: str


async def test_a_repartitioned_count_survives_a_kill_within_the_uncommitted_window(
    names: Names,
    cluster: Cluster,
) -> None:
    repartition = names.internal("by-user", "repartition")
    await names.create_topics()
    feeder = Feeder(names.url, names.input, PARTITIONS, rate=RATE, key_of=key_of).start()
    try:
        w1 = cluster.start("sk_dsl_counts:app", "w1", env=names.env)
        w2 = cluster.start("sk_dsl_counts:app", "w2", env=names.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS)
        # The kill lands after w2 committed in both roles, while it works on.
        before_input = await wait_for_commits(
            names.url,
            names.app_id,
            names.input,
            dict.fromkeys(partitions_of(t for t in split["w2"] if t.startswith("0_")), 1),
            details=cluster.output,
        )
        before_repartition = await wait_for_commits(
            names.url,
            names.app_id,
            repartition,
            dict.fromkeys(partitions_of(t for t in split["w2"] if t.startswith("1_")), 1),
            details=cluster.output,
        )
        marks = cluster.marks()
        w2.kill()
        await cluster.wait_for_assignment([w1], TASKS, since=marks)
        await feeder.wait_for(len(feeder.produced) + RATE // 2)
    finally:
        produced = await feeder.stop()
    await names.settle(cluster, produced, repartition)

    forwarded = []
    for r in await read_topic(names.url, repartition, PARTITIONS):
        assert r.key is not None and r.value is not None
        user, i, in_p, in_o, worker = r.value.decode().split()
        assert user == r.key.decode() == user_of(int(i))
        forwarded.append(Forwarded(user, r.partition, r.offset, int(in_p), int(in_o), worker))
    counted = []
    for r in await read_topic(names.url, names.output, PARTITIONS):
        assert r.key is not None and r.value is not None
        count, from_p, from_o, worker = r.value.decode().split()
        counted.append(Counted(r.key.decode(), int(count), int(from_p), int(from_o), worker))

    # Nothing lost: every input went through the repartition topic.
    assert {(f.input_partition, f.input_offset) for f in forwarded} == {
        (p.partition, p.offset) for p in produced
    }
    # w1 restored the counts of w2's counting tasks from their changelog.
    victim = split["w2"]
    counting_tasks = {t for t in victim if t.startswith("1_")}
    assert set(w1.restored()) >= counting_tasks, w1.output()

    # Duplicates can only come from what w2 did after its last commit: inputs it had
    # forwarded (sub-topology 0) and repartition records it had counted (1).
    sub0 = uncommitted_window(
        before_input,
        [(f.input_partition, f.input_offset) for f in forwarded if f.worker == "w2"],
        partitions_of(t for t in victim if t.startswith("0_")),
    )
    sub1 = uncommitted_window(
        before_repartition,
        [(c.from_partition, c.from_offset) for c in counted if c.worker == "w2"],
        partitions_of(counting_tasks),
    )
    extra: Counter[str] = Counter()
    for p in produced:
        if p.offset in sub0.get(p.partition, ()):
            extra[user_of(int(p.value))] += 1
    for f in forwarded:
        if f.offset in sub1.get(f.partition, ()):
            extra[f.user] += 1

    truth = Counter(user_of(int(p.value)) for p in produced)
    maxima: dict[str, int] = defaultdict(int)
    last: dict[str, int] = {}
    for c in counted:
        maxima[c.user] = max(maxima[c.user], c.count)
        last[c.user] = c.count
    final = await names.changelog_values("counts")
    assert set(truth) == set(maxima) == set(final)
    for user, n in truth.items():
        assert n <= maxima[user] <= n + extra[user], (user, n, maxima[user], extra[user])
        assert final[user] == maxima[user] == last[user], user
    # w2 had committed in both roles before it died: less than all it did is redone.
    assert all(r.start > 0 for r in [*sub0.values(), *sub1.values()]), (sub0, sub1)
    cluster.check_no_crash()


# A KTable across a kill ---------------------------------------------------------------


def city_counts(cities: dict[str, str | None]) -> Counter[str]:
    return Counter(c for c in cities.values() if c is not None)


async def test_a_regrouped_ktable_is_restored_from_its_topic_on_the_survivor(
    names: Names,
    cluster: Cluster,
) -> None:
    """The KTable's store comes back from its own topic (no changelog is written for
    it): people who move after the kill leave their old city, whose count the
    survivor can only lower if it restored where they lived."""
    repartition = names.internal("by-city", "repartition")
    await names.create_topics()
    w1 = cluster.start("sk_dsl_ktable:app", "w1", env=names.env)
    w2 = cluster.start("sk_dsl_ktable:app", "w2", env=names.env)
    split = await cluster.wait_for_assignment([w1, w2], TASKS)

    people = [f"person-{j}" for j in range(300)]
    lives: dict[str, str | None] = {p: f"city-{j % 7}" for j, p in enumerate(people)}
    first = await produce(
        names.url,
        names.input,
        PARTITIONS,
        [(p.encode(), str(c).encode()) for p, c in lives.items()],
    )
    await names.settle(cluster, first, repartition)
    assert await names.changelog_values("per-city") == city_counts(lives)

    # Everything is committed: a kill now loses nothing and duplicates nothing.
    marks = cluster.marks()
    w2.kill()
    await cluster.wait_for_assignment([w1], TASKS, since=marks)
    # Everyone moves on to the next city; every fifth person leaves for good.
    moves: list[tuple[bytes, bytes | None]] = []
    for j, p in enumerate(people):
        lives[p] = None if j % 5 == 0 else f"city-{(j + 1) % 7}"
        moves.append((p.encode(), None if lives[p] is None else str(lives[p]).encode()))
    second = await produce_with_tombstones(names.url, names.input, moves)
    await names.settle(cluster, [*first, *second], repartition)

    expected = city_counts(lives)
    final = await names.changelog_values("per-city")
    assert {c: n for c, n in final.items() if n} == expected
    last: dict[str, int] = {}
    for r in await read_topic(names.url, names.output, PARTITIONS):
        assert r.key is not None and r.value is not None
        last[r.key.decode()] = int(r.value)
    assert {c: n for c, n in last.items() if n} == expected
    # The victim's KTable tasks were rebuilt from the input topic, all of it that
    # had been committed: every record of phase one in their partitions.
    restored = w1.restored()
    for task in split["w2"]:
        if task.startswith("0_"):
            p = int(task.split("_")[1])
            assert restored.get(task) == sum(r.partition == p for r in first), w1.output()
    cluster.check_no_crash()


async def produce_with_tombstones(
    url: str, topic: str, records: Sequence[tuple[bytes, bytes | None]]
) -> list[Produced]:
    """Like cluster.produce, for values that may be None (tombstones)."""
    producer = AIOKafkaProducer(bootstrap_servers=servers(url), acks="all")
    await producer.start()
    try:
        out = []
        for key, value in records:
            meta = await producer.send_and_wait(
                topic, value=value, key=key, partition=partition_for(key, PARTITIONS)
            )
            out.append(Produced(key, value or b"", meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()
