"""DSL joins and windows with two real worker processes on a real broker.

- `sk_dsl_joins` (tests/apps): orders joined with a KTable of customers and, within
  5 s of event time, with payments; all three topics keyed by customer and
  co-partitioned (4 partitions), so each task holds both joins of its customers.
  One worker is killed with SIGKILL mid-stream: the survivor restores the table and
  the join buffers, and records fed after the kill join the ones fed before it.
- `sk_dsl_windows`: a tumbling count with emit="final" on explicit record
  timestamps: one final count per key and window, stragglers within the grace
  counted, records later than the grace dropped and counted in the metric.
- A join app whose topics have different partition counts is refused at start-up.

Each test has its own app id (= consumer group) and topics; record timestamps are
set by the producer (`timestamp_ms`), so event time does not depend on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaProducer
from cluster import (
    Cluster,
    WorkerProcess,
    committed_offsets,
    create_topic,
    partition_of,
    partitions_of,
    read_topic,
    servers,
    wait_for_commits,
    wait_until,
)

from streamkit.devbroker import free_port

PARTITIONS = 4
TASKS = frozenset(f"0_{p}" for p in range(PARTITIONS))

pytestmark = pytest.mark.timeout(150)


# Producing with event time ------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A produced record: its id (the value), key, event time and where it landed."""

    id: str
    key: str
    ts: int
    partition: int
    offset: int


async def produce_at(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[str, str, int]]
) -> list[Event]:
    """(key, value, timestamp ms) records, each to its key's partition, in order."""
    sent = []
    for key, value, ts in records:
        partition = partition_of(key.encode(), PARTITIONS)
        future = await producer.send(
            topic, value=value.encode(), key=key.encode(), partition=partition, timestamp_ms=ts
        )
        sent.append((key, value, ts, future))
    out = []
    for key, value, ts, future in sent:
        meta = await future
        out.append(Event(value, key, ts, meta.partition, meta.offset))
    return out


@contextlib.asynccontextmanager
async def producer_for(url: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=servers(url), acks="all", linger_ms=5)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def keys_on_every_partition(prefix: str, n: int) -> list[str]:
    """`n` keys `<prefix><i>`, at least one on each partition."""
    keys = [f"{prefix}{i}" for i in range(n)]
    assert {partition_of(k.encode(), PARTITIONS) for k in keys} == set(range(PARTITIONS))
    return keys


def ends(events: Sequence[Event]) -> dict[int, int]:
    """The offset after the last event, per partition (-1 where there is none: what the
    group reports for a partition it never committed)."""
    out = dict.fromkeys(range(PARTITIONS), -1)
    for e in events:
        out[e.partition] = max(out[e.partition], e.offset + 1)
    return out


# Joins across a kill -------------------------------------------------------------------

CUSTOMERS = keys_on_every_partition("c", 40)
UPDATED = set(CUSTOMERS[:10])  # renamed after the kill
ORDERS_PER_TICK = 8
TICK_S = 0.05
EVENT_STEP_MS = 1000  # between consecutive orders: one customer's orders are 40 s apart
WINDOW_MS = 5000  # sk_dsl_joins.JOIN_WINDOW_S
# Payment of order j, by j % 6: its event time relative to the order's (None: paid
# only after the kill when the order came before it). 5000 and -3000 are in the
# window, 5001 and -7000 are just or well outside it.
PAYMENT_DELTA_MS: tuple[int | None, ...] = (0, -3000, 5000, 5001, -7000, None)
DEFERRED_DELTA_MS = 2000


def customer_name(customer: str, updated: bool) -> str:
    return f"{customer}-{'v2' if updated else 'v1'}"


@dataclass
class JoinNames:
    url: str
    app_id: str
    orders: str
    customers: str
    payments: str
    enriched: str
    paid: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "SKT_APP_ID": self.app_id,
            "SKT_ORDERS": self.orders,
            "SKT_CUSTOMERS": self.customers,
            "SKT_PAYMENTS": self.payments,
            "SKT_ENRICHED": self.enriched,
            "SKT_PAID": self.paid,
        }

    async def create_topics(self, customer_partitions: int = PARTITIONS) -> None:
        for name in (self.orders, self.payments, self.enriched, self.paid):
            await create_topic(self.url, name, PARTITIONS)
        await create_topic(self.url, self.customers, customer_partitions)

    async def wait_for_commits(self, running: Cluster, topic: str, events: Sequence[Event]) -> None:
        await wait_for_commits(
            self.url, self.app_id, topic, ends(events), timeout=60, details=running.output
        )


@pytest.fixture
def join_names(kafka_url: str, topic_name: Callable[[str], str]) -> JoinNames:
    return JoinNames(
        kafka_url,
        topic_name("app"),
        topic_name("orders"),
        topic_name("customers"),
        topic_name("payments"),
        topic_name("enriched"),
        topic_name("paid"),
    )


@dataclass
class OrderFeeder:
    """Produces orders and their payments every tick until stopped.

    Order j is `o<j>` of customer `CUSTOMERS[j % 40]` at event time t0 + j s; its
    payment `p<j>` follows PAYMENT_DELTA_MS. Deferred payments (of orders fed while
    `defer` is set) wait in `deferred` for the test to send.
    """

    producer: AIOKafkaProducer
    names: JoinNames
    t0: int
    defer: bool
    next_order: int = 0
    orders: list[Event] = field(default_factory=list)
    payments: list[Event] = field(default_factory=list)
    deferred: list[tuple[str, str, int]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _job: asyncio.Task[None] | None = None

    def start(self) -> OrderFeeder:
        self._stop.clear()
        self._job = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            orders, payments = [], []
            for j in range(self.next_order, self.next_order + ORDERS_PER_TICK):
                customer, ts = CUSTOMERS[j % len(CUSTOMERS)], self.t0 + j * EVENT_STEP_MS
                orders.append((customer, f"o{j}", ts))
                delta = PAYMENT_DELTA_MS[j % len(PAYMENT_DELTA_MS)]
                if delta is None:
                    payment = (customer, f"p{j}", ts + DEFERRED_DELTA_MS)
                    (self.deferred if self.defer else payments).append(payment)
                else:
                    payments.append((customer, f"p{j}", ts + delta))
            self.next_order += ORDERS_PER_TICK
            self.orders += await produce_at(self.producer, self.names.orders, orders)
            self.payments += await produce_at(self.producer, self.names.payments, payments)
            next_tick += TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), timeout=max(0.0, next_tick - time.monotonic())
                )

    async def wait_for(self, orders: int) -> None:
        assert self._job is not None
        job = self._job
        await wait_until(
            lambda: len(self.orders) >= orders or job.done(),
            timeout=30,
            what=f"{orders} orders produced",
        )
        if job.done():
            job.result()

    async def stop(self) -> None:
        self._stop.set()
        if self._job is not None:
            await self._job

    async def send_deferred(self) -> None:
        self.payments += await produce_at(self.producer, self.names.payments, self.deferred)
        self.deferred = []


def joined_pairs(orders: Sequence[Event], payments: Sequence[Event]) -> set[tuple[str, str]]:
    """(order, payment) of one customer at most WINDOW_MS apart in event time (both ends
    included), whatever their arrival order."""
    by_customer: dict[str, list[Event]] = {}
    for p in payments:
        by_customer.setdefault(p.key, []).append(p)
    return {
        (o.id, p.id)
        for o in orders
        for p in by_customer.get(o.key, [])
        if abs(o.ts - p.ts) <= WINDOW_MS
    }


@dataclass(frozen=True)
class Joined:
    customer: str
    left: str  # the order
    right: str  # the customer's name, or the payment
    worker: str


async def read_joined(url: str, topic: str) -> list[Joined]:
    out = []
    for r in await read_topic(url, topic, PARTITIONS):
        assert r.key is not None and r.value is not None
        left, right, worker = r.value.decode().split("|")
        out.append(Joined(r.key.decode(), left, right, worker))
    return out


async def test_joins_with_two_workers_survive_a_kill_with_their_tables_and_buffers(
    join_names: JoinNames,
    cluster: Cluster,
) -> None:
    names = join_names
    await names.create_topics()
    async with producer_for(names.url) as producer:
        table = await produce_at(
            producer,
            names.customers,
            [(c, customer_name(c, False), int(time.time() * 1000)) for c in CUSTOMERS],
        )
        w1 = cluster.start("sk_dsl_joins:app", "w1", env=names.env)
        w2 = cluster.start("sk_dsl_joins:app", "w2", env=names.env)
        split = await cluster.wait_for_assignment([w1, w2], TASKS)
        assert all(split.values()), split
        # The table is loaded before any order comes: a stream-table join looks the
        # table up as the order arrives.
        await names.wait_for_commits(cluster, names.customers, table)

        # Event time starts after the table's records: none of them is ahead of it.
        feeder = OrderFeeder(producer, names, t0=int(time.time() * 1000) + 1000, defer=True)
        feeder.start()
        try:
            # The kill lands after w2 committed both inputs on its partitions.
            victim = partitions_of(split["w2"])
            before = {
                topic: await wait_for_commits(
                    names.url,
                    names.app_id,
                    topic,
                    dict.fromkeys(victim, 1),
                    details=cluster.output,
                )
                for topic in (names.orders, names.payments)
            }
        finally:
            await feeder.stop()
        # w2 dies with what it did since its last commit uncommitted.
        marks = cluster.marks()
        w2.kill()
        phase1_orders, phase1_payments = list(feeder.orders), list(feeder.payments)
        await cluster.wait_for_assignment([w1], TASKS, since=marks)
        # w1 redid w2's uncommitted records before anyone is renamed.
        await names.wait_for_commits(cluster, names.orders, phase1_orders)
        await names.wait_for_commits(cluster, names.payments, phase1_payments)
        table += await produce_at(
            producer,
            names.customers,
            [(c, customer_name(c, True), int(time.time() * 1000)) for c in sorted(UPDATED)],
        )
        await names.wait_for_commits(cluster, names.customers, table)

        # After the kill: payments of orders fed before it, then orders and payments.
        await feeder.send_deferred()
        feeder.defer = False
        feeder.start()
        try:
            await feeder.wait_for(len(feeder.orders) + int(1.0 / TICK_S) * ORDERS_PER_TICK)
        finally:
            await feeder.stop()
    await names.wait_for_commits(cluster, names.orders, feeder.orders)
    await names.wait_for_commits(cluster, names.payments, feeder.payments)

    # What w2 may have processed after its last commit, on each of its partitions:
    # from the offsets committed before the kill to the end of what was fed by then.
    window = {
        topic: {p: range(max(0, before[topic][p]), max(0, ends(events)[p])) for p in victim}
        for topic, events in ((names.orders, phase1_orders), (names.payments, phase1_payments))
    }

    def redone(topic: str, e: Event) -> bool:
        return e.offset in window[topic].get(e.partition, range(0))

    orders = {e.id: e for e in feeder.orders}
    payments = {e.id: e for e in feeder.payments}
    after_kill = {e.id for e in feeder.orders[len(phase1_orders) :]}

    # Each order enriched with its customer's name as of its arrival; twice at most
    # if w2 had enriched it without committing.
    enriched = await read_joined(names.url, names.enriched)
    times = Counter(j.left for j in enriched)
    assert set(times) == set(orders), set(orders) ^ set(times)
    for j in enriched:
        order = orders[j.left]
        assert j.customer == order.key, j
        assert j.right == customer_name(order.key, j.left in after_kill and order.key in UPDATED), j
        assert times[j.left] == 1 or (times[j.left] == 2 and redone(names.orders, order)), j
    assert {j.worker for j in enriched if j.left not in after_kill} == {"w1", "w2"}
    assert {j.worker for j in enriched if j.left in after_kill} == {"w1"}

    # Every order-payment pair within the window joined, and no other pair. A pair
    # with neither record redone is joined exactly once. A redone record may join
    # again: with its partner as restored from the changelog, and, as a buffered
    # record restored and then redone is in the buffer twice, twice with a partner
    # that comes later (Kafka Streams' at-least-once does the same): at most 4 times.
    paid = await read_joined(names.url, names.paid)
    pairs = Counter((j.left, j.right) for j in paid)
    expected = joined_pairs(feeder.orders, feeder.payments)
    assert set(pairs) == expected, (expected - set(pairs), set(pairs) - expected)
    assert {
        (f"o{i}", f"p{i}") for i in range(feeder.next_order) if i % 6 in (0, 1, 2, 5)
    } <= expected
    assert not {(f"o{i}", f"p{i}") for i in range(feeder.next_order) if i % 6 in (3, 4)} & expected
    for j in paid:
        assert j.customer == orders[j.left].key == payments[j.right].key, j
    for (order, payment), n in pairs.items():
        at_risk = redone(names.orders, orders[order]) or redone(names.payments, payments[payment])
        assert n == 1 or (at_risk and n <= 4), (order, payment, n)
    # Orders of w2's partitions paid only after the kill, never redone: they can only
    # have joined from w2's join buffer as w1 restored it from its changelog.
    restored_only = [
        (order.id, f"p{order.id[1:]}")
        for order in phase1_orders
        if order.partition in victim
        and PAYMENT_DELTA_MS[int(order.id[1:]) % 6] is None
        and not redone(names.orders, order)
    ]
    assert restored_only, window
    for pair in restored_only:
        assert pairs[pair] == 1, pair
    assert set(w1.restored()) >= split["w2"], w1.output()

    # w2 had committed before it died: less than all it did is redone.
    assert all(r.start > 0 for ranges in window.values() for r in ranges.values()), window
    cluster.check_no_crash()


# A co-partitioning mismatch -----------------------------------------------------------


async def test_a_join_of_topics_with_different_partition_counts_is_refused_before_consuming(
    join_names: JoinNames,
    cluster: Cluster,
) -> None:
    names = join_names
    await names.create_topics(customer_partitions=3)
    async with producer_for(names.url) as producer:
        await produce_at(producer, names.orders, [(c, "o", 1000) for c in CUSTOMERS[:8]])
    worker = cluster.start("sk_dsl_joins:app", "w1", env=names.env)
    assert await worker.wait_exit() == 1, worker.output()
    log = worker.log()
    assert "Traceback" not in log, worker.output()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and log.rstrip().endswith(errors[0]), worker.output()
    assert re.search(
        rf"join enrich needs co-partitioned inputs .*\b{names.orders} has 4, "
        rf"{names.customers} has 3 partitions",
        errors[0],
    ), errors[0]
    assert worker.owned() is None, worker.output()
    assert await committed_offsets(
        names.url, names.app_id, names.orders, PARTITIONS
    ) == dict.fromkeys(range(PARTITIONS), -1)
    assert await read_topic(names.url, names.enriched, PARTITIONS) == []


# Windows ------------------------------------------------------------------------------

WINDOW_SIZE_MS = 10_000  # sk_dsl_windows.WINDOW_S
GRACE_MS = 5_000  # sk_dsl_windows.GRACE_S
KEYS = keys_on_every_partition("k", 24)


@dataclass
class WindowNames:
    url: str
    app_id: str
    input: str
    output: str

    @property
    def env(self) -> dict[str, str]:
        return {"SKT_APP_ID": self.app_id, "SKT_INPUT": self.input, "SKT_OUTPUT": self.output}


@pytest.fixture
def window_names(kafka_url: str, topic_name: Callable[[str], str]) -> WindowNames:
    return WindowNames(kafka_url, topic_name("app"), topic_name("in"), topic_name("out"))


def window_input(t0: int) -> tuple[list[tuple[str, str, int]], Counter[tuple[str, int]], int]:
    """The records, in the order to produce them; the count each (key, window start)
    must end with; how many records are later than the grace.

    Round n puts 1 to 4 records of every key at t0 + n * 10 s + 0..3 s (window n), so
    every partition's stream time reaches the start of window n with it. Stragglers
    for window n come after round n + 1 (stream time < end + grace: counted); late
    records for window 0 after round 2 (stream time >= end + grace: dropped). A last
    record per partition, a minute later, closes the three windows.
    """
    records: list[tuple[str, str, int]] = []
    counts: Counter[tuple[str, int]] = Counter()

    def put(key: str, ts: int, counted: bool = True) -> None:
        records.append((key, f"{key}@{ts}", ts))
        if counted:
            counts[key, ts - ts % WINDOW_SIZE_MS] += 1

    def round_(n: int) -> None:
        for i, key in enumerate(KEYS):
            for j in range(1 + (3 * i + n) % 4):
                put(key, t0 + n * WINDOW_SIZE_MS + j * 1000)

    def stragglers(n: int) -> None:
        for i, key in enumerate(KEYS):
            if i % 3 == n:
                put(key, t0 + n * WINDOW_SIZE_MS + 9_500)

    round_(0)
    round_(1)
    stragglers(0)
    round_(2)
    stragglers(1)
    late = [key for i, key in enumerate(KEYS) if i % 4 == 0]
    for key in late:
        put(key, t0 + 9_600, counted=False)
    clock_keys = {partition_of(f"clock-{i}".encode(), PARTITIONS): f"clock-{i}" for i in range(64)}
    assert len(clock_keys) == PARTITIONS
    for key in clock_keys.values():
        records.append((key, "clock", t0 + 6 * WINDOW_SIZE_MS))
    return records, counts, len(late)


def scrape_late(port: int) -> float:
    """The worker's `streamkit_dropped_records_total{reason="late"}`, over all nodes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pattern = r'^streamkit_dropped_records_total\{[^}]*reason="late"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


async def test_a_final_windowed_count_with_two_workers_emits_each_window_once(
    window_names: WindowNames,
    cluster: Cluster,
) -> None:
    names = window_names
    await create_topic(names.url, names.input, PARTITIONS)
    await create_topic(names.url, names.output, PARTITIONS)
    ports = {"w1": free_port(), "w2": free_port()}
    workers: list[WorkerProcess] = [
        cluster.start(
            "sk_dsl_windows:app",
            name,
            env={**names.env, "STREAMKIT_METRICS_PORT": str(port)},
        )
        for name, port in ports.items()
    ]
    split = await cluster.wait_for_assignment(workers, TASKS)
    assert all(split.values()), split

    # Ten minutes back, on a window boundary: event time apart from the clock, and
    # within any broker's retention.
    now = int(time.time() * 1000)
    t0 = now - now % WINDOW_SIZE_MS - 600_000
    records, expected, late = window_input(t0)
    async with producer_for(names.url) as producer:
        produced = await produce_at(producer, names.input, records)

    async def final_counts() -> list[tuple[str, int, int, int, str]]:
        out = []
        for r in await read_topic(names.url, names.output, PARTITIONS):
            assert r.key is not None and r.value is not None
            start, end, n, worker = r.value.decode().split()
            out.append((r.key.decode(), int(start), int(end), int(n), worker))
        return [o for o in out if not o[0].startswith("clock-")]

    deadline = time.monotonic() + 30
    while len(got := await final_counts()) < len(expected):
        cluster.check_no_crash()
        assert time.monotonic() < deadline, (
            f"{len(got)} of {len(expected)} windows\n{cluster.output()}"
        )
        await asyncio.sleep(0.2)
    await wait_for_commits(
        names.url, names.app_id, names.input, ends(produced), details=cluster.output
    )
    got = await final_counts()

    # Once per key and window, with every record of it but the late ones.
    assert Counter((key, start) for key, start, *_ in got) == Counter(set(expected)), got
    assert {(key, start): n for key, start, _end, n, _w in got} == dict(expected)
    assert all(end == start + WINDOW_SIZE_MS for _key, start, end, _n, _w in got), got
    assert {start for _key, start, *_ in got} == {t0 + n * WINDOW_SIZE_MS for n in range(3)}
    assert {w for *_, w in got} == {"w1", "w2"}

    # Late records were counted by the workers that dropped them (all processed by now).
    totals = {name: await asyncio.to_thread(scrape_late, port) for name, port in ports.items()}
    assert sum(totals.values()) == late, totals
    for w in workers:
        await w.stop()
    cluster.check_no_crash()
