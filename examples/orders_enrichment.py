"""Enrich orders with their customer and product: a stream-table join and a
GlobalKTable lookup, in the Streams DSL.

- `customers` is a KTable: partitioned like `orders` (both keyed by customer id),
  so each task joins the orders of its customers with its shard of the table.
- `products` is a GlobalKTable: every worker holds all of it, so an order finds
  its product by `product_id`, a key the order is not partitioned by, with no
  repartition.

A timer plays sample data: customers and products first, then orders (two of them
for a customer or a product nobody knows: an inner join drops those). An agent
prints what arrives in `enriched-orders`. Run it with

    streamkit worker examples.orders_enrichment:app --stop-when-idle 2
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import streamkit as sk


class Customer(BaseModel):
    id: str
    name: str
    tier: str


class Product(BaseModel):
    id: str
    name: str
    price: float


class Order(BaseModel):
    id: str
    customer_id: str
    product_id: str
    quantity: int


class EnrichedOrder(BaseModel):
    order_id: str
    customer: str
    tier: str
    product: str
    quantity: int
    total: float


app = sk.App("orders-enrichment")
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)
customers_topic = app.topic("customers", key_type=str, value_type=Customer, partitions=4)
products_topic = app.topic("products", key_type=str, value_type=Product, partitions=1)
enriched = app.topic("enriched-orders", key_type=str, value_type=EnrichedOrder, partitions=4)

customers = app.ktable(customers_topic)
products = app.global_ktable(products_topic)


def with_product(pair: tuple[Order, Customer], product: Product) -> EnrichedOrder:
    order, customer = pair
    return EnrichedOrder(
        order_id=order.id,
        customer=customer.name,
        tier=customer.tier,
        product=product.name,
        quantity=order.quantity,
        total=round(order.quantity * product.price, 2),
    )


(
    app.stream(orders)
    .join(customers, lambda order, customer: (order, customer))
    .join(products, with_product, key_selector=lambda _customer_id, pair: pair[0].product_id)
    .to(enriched)
)


CUSTOMERS = [
    Customer(id="c1", name="Ada", tier="gold"),
    Customer(id="c2", name="Grace", tier="silver"),
    Customer(id="c3", name="Linus", tier="bronze"),
]
PRODUCTS = [
    Product(id="p1", name="keyboard", price=49.5),
    Product(id="p2", name="monitor", price=189.0),
    Product(id="p3", name="cable", price=4.25),
]
ORDERS = [
    Order(id="o1", customer_id="c1", product_id="p2", quantity=1),
    Order(id="o2", customer_id="c2", product_id="p1", quantity=2),
    Order(id="o3", customer_id="c3", product_id="p3", quantity=10),
    Order(id="o4", customer_id="c9", product_id="p1", quantity=1),  # unknown customer
    Order(id="o5", customer_id="c1", product_id="p9", quantity=1),  # unknown product
    Order(id="o6", customer_id="c1", product_id="p3", quantity=3),
]
sent: set[str] = set()


@app.timer(0.5)
async def play_sample_data() -> None:
    """Reference data first; the orders once this worker's copy of the products has it."""
    if "reference" not in sent:
        sent.add("reference")
        for c in CUSTOMERS:
            await app.send(customers_topic, key=c.id, value=c)
        for p in PRODUCTS:
            await app.send(products_topic, key=p.id, value=p)
    elif "orders" not in sent and all(products.get(p.id) for p in PRODUCTS):
        sent.add("orders")
        for o in ORDERS:
            await app.send(orders, key=o.customer_id, value=o)


@app.agent(enriched)
async def show(stream: Any) -> Any:
    async for order in stream:
        print(
            f"{order.order_id}: {order.customer} ({order.tier}) bought {order.quantity} x "
            f"{order.product} for {order.total:.2f}",
            flush=True,
        )
