"""GlobalKTable and the stream-GlobalKTable join: through the TopologyTestDriver (updates,
deletes, inner vs left, bad records by policy), the worker-level store's checkpoints
(resume, corrupt file, recreated topic) and a memory-broker worker (loaded before the
first stream record, updated while running)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, read, running, wait_for
from pydantic import BaseModel

import streamkit as sk
from streamkit.dsl.global_table import GlobalKTable, global_join
from streamkit.errors import StateError
from streamkit.runtime.worker import Worker
from streamkit.testing import TopologyTestDriver
from streamkit.transport.memory import MemoryBroker


class Product(BaseModel):
    name: str
    price: int


class Order(BaseModel):
    product: str | None
    qty: int


def enrich(order: Order, product: Product | None) -> str:
    if product is None:
        return f"{order.qty} x ?"
    return f"{order.qty} x {product.name} = {order.qty * product.price}"


def shop(
    how: str = "inner",
    *,
    on_error: sk.ErrorPolicy | str = sk.ErrorPolicy.FAIL,
    broker: str | None = None,
    data_dir: Path | None = None,
) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic, GlobalKTable]:
    """Orders (4 partitions) joined with a global table of products (3 partitions: no
    co-partitioning needed) at the order's product id."""
    app = sk.App("shop", broker=broker, data_dir=data_dir, commit_interval_s=0.05)
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)
    products = app.topic(
        "products", key_type=str, value_type=Product, partitions=3, on_error=on_error
    )
    out = app.topic("enriched", key_type=str, value_type=str, partitions=4)
    catalog = app.global_ktable(products, name="catalog")
    stream = app.stream(orders)
    join = stream.join if how == "inner" else stream.left_join
    join(catalog, enrich, key_selector=lambda _id, order: order.product).to(out)
    return app, orders, products, out, catalog


# Through the test driver ------------------------------------------------------------------


def test_inner_join_sees_updates_and_deletes_of_the_global_table() -> None:
    app, orders, products, out, _ = shop("inner")
    with TopologyTestDriver(app) as driver:
        driver.pipe(products, "p1", Product(name="pen", price=2), timestamp_ms=1)
        driver.pipe(orders, "o1", Order(product="p1", qty=3), timestamp_ms=10)
        driver.pipe(orders, "o2", Order(product="p9", qty=1), timestamp_ms=11)  # no match
        driver.pipe(products, "p1", Product(name="pen", price=5), timestamp_ms=12)
        driver.pipe(orders, "o3", Order(product="p1", qty=1), timestamp_ms=13)
        driver.pipe(products, "p1", None, timestamp_ms=14)  # tombstone
        driver.pipe(orders, "o4", Order(product="p1", qty=1), timestamp_ms=15)
        records = driver.read_records(out)
        assert [(r.key, r.value, r.timestamp) for r in records] == [
            ("o1", "3 x pen = 6", 10),
            ("o3", "1 x pen = 5", 13),
        ]
        assert driver.store("catalog") == {}


def test_left_join_passes_every_record_with_none_where_nothing_matches() -> None:
    app, orders, products, out, _ = shop("left")
    with TopologyTestDriver(app) as driver:
        driver.pipe(orders, "o1", Order(product="p1", qty=2), timestamp_ms=1)
        driver.pipe(products, "p1", Product(name="ink", price=7), timestamp_ms=2)
        driver.pipe(orders, "o2", Order(product="p1", qty=2), timestamp_ms=3)
        driver.pipe(orders, "o3", Order(product=None, qty=4), timestamp_ms=4)  # no lookup key
        driver.pipe(products, "p1", None, timestamp_ms=5)
        driver.pipe(orders, "o4", Order(product="p1", qty=1), timestamp_ms=6)
        # o3's selector gives no key: nothing to look up, dropped as Kafka Streams does.
        assert driver.read_output(out) == [("o1", "2 x ?"), ("o2", "2 x ink = 14"), ("o4", "1 x ?")]


def test_store_holds_every_partition_of_the_topic() -> None:
    app, _, products, _, catalog = shop()
    items = {f"p{i}": Product(name=f"item {i}", price=i) for i in range(30)}
    with TopologyTestDriver(app) as driver:
        driver.pipe_many(products, list(items.items()))
        assert {driver.broker.partition_count("products")} == {3}
        spread = {r.partition for r in driver.broker.records("products")}
        assert spread == {0, 1, 2}
        assert driver.store("catalog") == items
        assert catalog.get("p7") == items["p7"]
        assert catalog.get("missing", "none") == "none"
    with pytest.raises(StateError, match="not loaded"):
        catalog.get("p7")


def test_inner_join_counts_records_it_cannot_look_up() -> None:
    app, orders, products, out, _ = shop("inner")
    with TopologyTestDriver(app) as driver:
        driver.pipe(products, "p1", Product(name="pen", price=2), timestamp_ms=1)
        driver.pipe(orders, "o1", Order(product=None, qty=1), timestamp_ms=2)
        driver.pipe(orders, "o2", None, timestamp_ms=3)
        assert driver.read_output(out) == []
    [node] = [n.name for n in app.graph.nodes if n.name.startswith("KSTREAM-JOIN")]
    assert app.metrics.value("dropped_records", node=node, reason="null lookup key") == 1
    assert app.metrics.value("dropped_records", node=node, reason="null value") == 1


def test_global_join_directly_keeps_the_stream_key_and_names_the_node() -> None:
    app = sk.App("direct")
    clicks = app.topic("clicks", key_type=str, value_type=str, partitions=2)
    users = app.topic("users", key_type=str, value_type=str, partitions=1)
    out = app.topic("out", key_type=str, value_type=str, partitions=2)
    table = app.global_ktable(users)
    joined = global_join(
        app.stream(clicks),
        table,
        lambda page, user: f"{user}@{page}",
        "inner",
        lambda _k, v: v.split("/")[0],
        name="by-user",
    )
    joined.to(out)
    assert joined.node.name == "by-user"
    with TopologyTestDriver(app) as driver:
        driver.pipe(users, "ann", "Ann", timestamp_ms=1)
        driver.pipe(clicks, "c1", "ann/home", timestamp_ms=2)
        assert driver.read_output(out) == [("c1", "Ann@ann/home")]
        assert driver.store("users") == {"ann": "Ann"}


def test_global_topic_is_no_source_of_the_topology() -> None:
    app, orders, products, _, _ = shop()
    topology = app.topology()
    assert products.name not in topology.source_topics()
    assert orders.name in topology.source_topics()
    # Orders have 4 partitions, products 3: no co-partitioning is asked for.
    assert topology.subtopologies[0].task_ids()[-1].partition == 3
    assert f"Global store: catalog (topic: {products.name}" in topology.describe()


def test_declaration_errors_name_the_problem() -> None:
    app, orders, products, _, catalog = shop()
    with pytest.raises(sk.ConfigError, match="declared twice"):
        app.global_ktable(products, name="catalog")
    with pytest.raises(sk.ConfigError, match="already read as a stream"):
        app.global_ktable(orders)
    with pytest.raises(sk.ConfigError, match="is a GlobalKTable's"):
        app.stream(products)
    with pytest.raises(sk.ConfigError, match="is a GlobalKTable's"):
        app.ktable(products, name="products-again")
    with pytest.raises(sk.ConfigError, match="declared twice"):
        app.table("catalog")
    with pytest.raises(sk.ConfigError, match="'inner' or 'left'"):
        global_join(app.stream(orders), catalog, enrich, "outer", lambda k, v: k)  # type: ignore[arg-type]
    with pytest.raises(sk.ConfigError, match="key_selector"):
        app.stream(orders).join(catalog, enrich)
    other = sk.App("other")
    theirs = other.topic("orders", key_type=str, value_type=Order)
    with pytest.raises(sk.ConfigError, match="across apps"):
        global_join(other.stream(theirs), catalog, enrich, "inner", lambda k, v: k)


def put_raw(driver: TopologyTestDriver, topic: str, key: bytes | None, value: bytes) -> None:
    """A record no serde wrote (another producer's), to a global topic."""
    driver.broker.append(topic, 0, key, value, (), 1)


def test_bad_global_records_follow_the_topic_policy_skip() -> None:
    app, orders, products, out, _ = shop("inner", on_error="skip")
    with TopologyTestDriver(app) as driver:
        put_raw(driver, "products", b"p1", b"{not json")
        put_raw(driver, "products", None, b'{"name": "keyless", "price": 1}')
        driver.pipe(products, "p2", Product(name="cup", price=3), timestamp_ms=1)
        driver.pipe(orders, "o1", Order(product="p2", qty=1), timestamp_ms=2)
        assert driver.read_output(out) == [("o1", "1 x cup = 3")]
        assert driver.store("catalog") == {"p2": Product(name="cup", price=3)}
    assert app.metrics.value("bad_records", topic="products", policy="skip") == 1
    assert app.metrics.value("dropped_records", node="catalog", reason="null key") == 1


def test_bad_global_records_follow_the_topic_policy_dead_letter() -> None:
    app, _, products, _, _ = shop("inner", on_error="dead_letter")
    with TopologyTestDriver(app) as driver:
        put_raw(driver, "products", b"p1", b'{"name": "pen"}')  # no price
        driver.pipe(products, "p2", Product(name="cup", price=3), timestamp_ms=1)
        [dead] = driver.broker.records("shop-dlq")
        assert (dead.key, dead.value) == (b"p1", b'{"name": "pen"}')
        headers = dict(dead.headers)
        assert headers["streamkit.error.topic"] == b"products"
        assert b"price" in headers["streamkit.error.reason"]
        assert driver.store("catalog") == {"p2": Product(name="cup", price=3)}


def test_bad_global_record_under_fail_stops_with_where_it_is() -> None:
    app, _, products, _, _ = shop("inner")
    with TopologyTestDriver(app) as driver:
        put_raw(driver, "products", b"p1", b"{not json")
        with pytest.raises(sk.BadInputError, match=r"products\[0\]@0"):
            driver.pipe(products, "p2", Product(name="cup", price=3), timestamp_ms=1)


# The worker-level store: checkpoints -------------------------------------------------------


def loaded(app: sk.App) -> float:
    """Records the app's global tables have read (metric streamkit_records_processed)."""
    return app.metrics.value("records_processed", topic="products")


async def produce_products(app: sk.App, products: sk.Topic, items: dict[str, Any]) -> None:
    for key, value in items.items():
        await app.send(products, key=key, value=value)


async def run_until_loaded(app: sk.App) -> dict[str, Any]:
    """Start a worker, read its global table whole once loaded, stop it."""
    catalog = app.global_tables["catalog"]
    async with running(app) as worker:
        await wait_for(lambda: worker.coordinator is not None and is_loaded(catalog))
        return dict(catalog.store.items())


def is_loaded(table: GlobalKTable) -> bool:
    try:
        _ = table.store
    except StateError:
        return False
    return True


def global_files(data_dir: Path) -> list[Path]:
    return list(data_dir.glob("shop/global/*.sqlite"))


def overwrite(path: Path) -> None:
    """Garbage where the SQLite file was (its WAL gone too)."""
    path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def product(i: int) -> Product:
    return Product(name=f"item {i}", price=i)


async def test_a_restart_reads_only_what_came_after_the_checkpoint(
    memory_url: str, tmp_path: Path
) -> None:
    app, _, products, _, _ = shop(broker=memory_url, data_dir=tmp_path)
    first = {f"p{i}": product(i) for i in range(40)}
    await produce_products(app, products, first)
    assert await run_until_loaded(app) == first
    assert loaded(app) == 40
    assert global_files(tmp_path) == [tmp_path / "shop/global/catalog.sqlite"]

    later = {"p1": None, "p2": product(200), "p99": product(99)}
    await produce_products(app, products, later)
    expected = {k: v for k, v in {**first, **later}.items() if v is not None}
    assert await run_until_loaded(app) == expected
    assert loaded(app) == 40 + 3


async def test_a_corrupt_file_means_a_full_replay_with_a_warning(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _, products, _, _ = shop(broker=memory_url, data_dir=tmp_path)
    items = {f"p{i}": product(i) for i in range(20)}
    await produce_products(app, products, items)
    assert await run_until_loaded(app) == items
    overwrite(tmp_path / "shop/global/catalog.sqlite")
    with caplog.at_level(logging.WARNING, logger="streamkit"):
        assert await run_until_loaded(app) == items
    assert loaded(app) == 40
    assert any("unreadable" in r.getMessage() for r in caplog.records)


async def test_a_checkpoint_outside_the_topic_means_a_full_replay(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _, products, _, _ = shop(broker=memory_url, data_dir=tmp_path)
    await produce_products(app, products, {f"p{i}": product(i) for i in range(30)})
    await run_until_loaded(app)
    # The broker lost everything (say, recreated): the old rows must not survive.
    MemoryBroker.reset(MemoryBroker.for_url(memory_url).name)
    fresh = {"p1": product(1)}
    await produce_products(app, products, fresh)
    with caplog.at_level(logging.WARNING, logger="streamkit.global"):
        assert await run_until_loaded(app) == fresh
    assert any("replaying the whole topic" in r.getMessage() for r in caplog.records)


# A memory-broker worker --------------------------------------------------------------------


async def test_worker_loads_the_table_before_the_first_stream_record(
    memory_url: str, tmp_path: Path
) -> None:
    app, orders, products, out, catalog = shop("left", broker=memory_url, data_dir=tmp_path)
    items = {f"p{i}": product(i) for i in range(50)}
    await produce_products(app, products, items)
    sent = [(f"o{i}", Order(product=f"p{i % 50}", qty=1 + i % 3)) for i in range(200)]
    for key, order in sent:
        await app.send(orders, key=key, value=order)
    async with running(app):
        await wait_for(lambda: len(read(app, out)) == len(sent), what="every order joined")
        got = dict(read(app, out))
        assert got == {key: enrich(order, items[order.product or ""]) for key, order in sent}

        # An update while running reaches the records after it.
        await app.send(products, key="p3", value=Product(name="new", price=100))
        await wait_for(lambda: catalog.get("p3") == Product(name="new", price=100))
        await app.send(orders, key="late", value=Order(product="p3", qty=2))
        await wait_for(lambda: ("late", "2 x new = 200") in read(app, out), what="late order")
    with pytest.raises(StateError):
        catalog.get("p3")  # the worker let go of it when it stopped


async def test_worker_stops_on_a_bad_global_record_under_fail(
    memory_url: str, tmp_path: Path
) -> None:
    app, orders, products, out, _ = shop("inner", broker=memory_url, data_dir=tmp_path)
    await app.send(orders, key="o1", value=Order(product="p1", qty=1))
    broker = MemoryBroker.for_url(memory_url)
    broker.create_topic(products.name, products.partitions)
    broker.append(products.name, 1, b"p1", b"{oops", (), 1)
    worker = Worker(app)
    with pytest.raises(sk.BadInputError, match=r"products\[1\]@0"):
        await asyncio.wait_for(worker.run(), 20)
    # It stopped before joining the group: the order was never processed.
    assert read(app, out) == []
    assert set(committed(app, orders).values()) == {None}


async def test_a_worker_stopped_while_loading_never_processes_input(
    memory_url: str, tmp_path: Path
) -> None:
    app, orders, products, out, catalog = shop("left", broker=memory_url, data_dir=tmp_path)
    await produce_products(app, products, {f"p{i}": product(i) for i in range(50)})
    await app.send(orders, key="o1", value=Order(product="p1", qty=1))
    worker = Worker(app)
    worker.stop()  # as SIGTERM during the load would
    await asyncio.wait_for(worker.run(), 20)
    assert loaded(app) == 0
    assert not is_loaded(catalog)
    assert read(app, out) == []
    assert set(committed(app, orders).values()) == {None}
