"""A GlobalKTable with two real worker processes on a real broker (tests/apps/sk_global_join):
each worker loads the whole table (both partitions of its topic) before it processes
an order, so the orders of every partition, split over the two workers, all find their
product; an update made while they run reaches later orders on both workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cluster import (
    Cluster,
    create_topic,
    partition_of,
    produce,
    read_topic,
)

ORDER_PARTITIONS = 4
PRODUCT_PARTITIONS = 2
TASKS = frozenset(f"0_{p}" for p in range(ORDER_PARTITIONS))
PRODUCTS = 60

pytestmark = pytest.mark.timeout(120)


@dataclass
class Names:
    url: str
    app_id: str
    orders: str
    products: str
    output: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "SKT_APP_ID": self.app_id,
            "SKT_INPUT": self.orders,
            "SKT_GLOBAL": self.products,
            "SKT_OUTPUT": self.output,
        }


@dataclass(frozen=True)
class Enriched:
    order: str
    product: str
    name: str
    worker: str


@pytest.fixture
def names(kafka_url: str, topic_name: Callable[[str], str]) -> Names:
    return Names(
        kafka_url,
        topic_name("app"),
        topic_name("orders"),
        topic_name("products"),
        topic_name("out"),
    )


async def read_enriched(names: Names) -> dict[str, Enriched]:
    out = {}
    for r in await read_topic(names.url, names.output, ORDER_PARTITIONS):
        assert r.key is not None and r.value is not None
        product, name, worker = r.value.decode().split("|")
        out[r.key.decode()] = Enriched(r.key.decode(), product, name, worker)
    return out


async def wait_for_orders(names: Names, orders: set[str], running: Cluster) -> dict[str, Enriched]:
    """Until every one of `orders` is in the output; all of the output by then."""
    deadline = time.monotonic() + 30
    while True:
        got = await read_enriched(names)
        if orders <= got.keys():
            return got
        running.check_no_crash()
        assert time.monotonic() < deadline, (
            f"{len(orders - got.keys())} orders not enriched within 30 s\n{running.output()}"
        )
        await asyncio.sleep(0.1)


def orders_for(product: str, tag: str) -> list[tuple[bytes, bytes]]:
    """Orders of `product`, at least one on every partition of the order topic."""
    out: list[tuple[bytes, bytes]] = []
    covered: set[int] = set()
    i = 0
    while len(covered) < ORDER_PARTITIONS or len(out) < 8:
        key = f"{tag}-{i}".encode()
        covered.add(partition_of(key, ORDER_PARTITIONS))
        out.append((key, product.encode()))
        i += 1
    return out


async def test_both_workers_join_every_partition_with_the_whole_table_and_its_updates(
    names: Names,
    cluster: Cluster,
) -> None:
    await create_topic(names.url, names.orders, ORDER_PARTITIONS)
    await create_topic(names.url, names.products, PRODUCT_PARTITIONS)
    await create_topic(names.url, names.output, ORDER_PARTITIONS)
    catalog = {f"p{j}": f"product {j}" for j in range(PRODUCTS)}
    await produce(
        names.url,
        names.products,
        PRODUCT_PARTITIONS,
        [(k.encode(), v.encode()) for k, v in catalog.items()],
    )
    w1 = cluster.start("sk_global_join:app", "w1", env=names.env)
    w2 = cluster.start("sk_global_join:app", "w2", env=names.env)
    split = await cluster.wait_for_assignment([w1, w2], TASKS)
    assert all(split.values()), split  # each worker has orders to enrich
    for w in (w1, w2):
        # The table was whole before the worker joined the group.
        log = w.log()
        assert -1 < log.find("global tables loaded") < log.find("owns tasks"), w.output()
        assert f"catalog {PRODUCTS} keys" in log, w.output()

    orders = [(f"o{i}".encode(), f"p{i % PRODUCTS}".encode()) for i in range(240)]
    await produce(names.url, names.orders, ORDER_PARTITIONS, orders)
    got = await wait_for_orders(names, {k.decode() for k, _ in orders}, cluster)
    for key, product in orders:
        e = got[key.decode()]
        assert (e.product, e.name) == (product.decode(), catalog[product.decode()]), e
    # Each worker answered from both partitions of the products topic: a whole copy.
    for w in ("w1", "w2"):
        seen = {
            partition_of(e.product.encode(), PRODUCT_PARTITIONS)
            for e in got.values()
            if e.worker == w
        }
        assert seen == set(range(PRODUCT_PARTITIONS)), (w, seen)

    # An update while they run: later orders on every partition get the new name.
    await produce(names.url, names.products, PRODUCT_PARTITIONS, [(b"p7", b"renamed")])
    rounds = 0

    async def both_renamed() -> bool:
        nonlocal rounds
        rounds += 1
        batch = orders_for("p7", f"r{rounds}")
        await produce(names.url, names.orders, ORDER_PARTITIONS, batch)
        out = await wait_for_orders(names, {k.decode() for k, _ in batch}, cluster)
        return all(out[k.decode()].name == "renamed" for k, _ in batch)

    deadline = time.monotonic() + 20
    while not await both_renamed():
        assert time.monotonic() < deadline, (
            f"the update did not reach both workers\n{cluster.output()}"
        )
    final = await read_enriched(names)
    last_round = [final[k.decode()] for k, _ in orders_for("p7", f"r{rounds}")]
    assert {e.worker for e in last_round} == {"w1", "w2"}
    await w1.stop()
    await w2.stop()
    cluster.check_no_crash()


async def test_a_restarted_worker_resumes_its_global_table_from_the_checkpoint(
    names: Names,
    cluster: Cluster,
) -> None:
    await create_topic(names.url, names.orders, ORDER_PARTITIONS)
    await create_topic(names.url, names.products, PRODUCT_PARTITIONS)
    await create_topic(names.url, names.output, ORDER_PARTITIONS)
    await produce(
        names.url,
        names.products,
        PRODUCT_PARTITIONS,
        [(f"p{j}".encode(), b"v1") for j in range(PRODUCTS)],
    )
    w1 = cluster.start("sk_global_join:app", "w1", env=names.env)
    await w1.wait_for_line(rf"global tables loaded .*\({PRODUCTS} records read\)")
    await cluster.wait_for_assignment([w1], TASKS)
    await w1.stop()
    await produce(names.url, names.products, PRODUCT_PARTITIONS, [(b"p1", b"v2"), (b"p2", b"v2")])
    again = cluster.start("sk_global_join:app", "w1", env=names.env, data_dir=w1.data_dir)
    # Only the two records after the checkpoint are read again.
    await again.wait_for_line(rf"global tables loaded .*catalog {PRODUCTS} keys \(2 records read\)")
    await cluster.wait_for_assignment([again], TASKS)
    await produce(names.url, names.orders, ORDER_PARTITIONS, [(b"o1", b"p1"), (b"o3", b"p3")])
    got = await wait_for_orders(names, {"o1", "o3"}, cluster)
    assert (got["o1"].name, got["o3"].name) == ("v2", "v1")
    await again.stop()
    cluster.check_no_crash()
