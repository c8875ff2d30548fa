"""Foreign-key table-table joins (KIP-213): the left table's rows subscribe to the
right table's rows by foreign key through an internal topic keyed by it, and the
answers come back through another keyed by the left key, since the two tables
cannot be co-partitioned."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..processor import Record
from ..serde import serde_for
from ..state.join_store import (
    SubscriptionStore,
)
from ..state.table import Table
from ..state.timestamped import ValueAndTimestamp
from ..topic import Topic
from . import operators as ops
from .aggregate import Change
from .graph import NodeKind, NodeSpec
from .join_parts import (
    PYTHON,
    Joiner,
    JoinHow,
    changelog_topic,
    copartition,
    stores_behind,
)
from .kstream import internal_serde
from .ktable import KTable, ValueGetter, timestamped_table

if TYPE_CHECKING:
    from ..app import App


_SUBSCRIBE, _UNSUBSCRIBE = 1, 0


def _settle(
    result: Table, key: Any, new: Any, source: Record, *, tombstone: bool = False
) -> Record | None:
    """Store a left row's new join result; the change to pass on, if anything changed.

    `tombstone`: a None result is passed on even when no result was stored. Kafka
    Streams does this for a left row that existed before (deleted, or moved to a
    foreign key without a match): it cannot know whether a result went out.
    """
    held = result.get(key)
    old = None if held is None else held[0]
    if new is None:
        if held is None and not tombstone:
            return None
        if held is not None:
            result.delete(key)
    else:
        result[key] = ValueAndTimestamp(new, source.timestamp)
    return Record(key, Change(new, old), source.timestamp, source.headers)


class _SubscriptionSend(ops.DslProcessor):
    """Left side: subscribe each row to its foreign key, unsubscribe it from the old one.

    A row without a foreign key (deleted, or referencing nothing) needs no answer
    from the right side: its result is settled here.
    """

    def __init__(
        self,
        foreign_key: Callable[[Any], Any],
        joiner: Joiner,
        left: bool,
        result: Table,
        sink: str,
        output: str,
    ) -> None:
        self.foreign_key = foreign_key
        self.joiner = joiner
        self.left = left
        self.result = result
        self.sink = sink
        self.output = output

    def process(self, record: Record) -> None:
        key = record.key
        if key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        new_fk = None if change.new is None else self.foreign_key(change.new)
        old_fk = None if change.old is None else self.foreign_key(change.old)
        ts, headers = record.timestamp, record.headers
        # A row that existed before has its result replaced even by "nothing to join".
        existed = change.old is not None
        if old_fk is not None and old_fk != new_fk:
            self.context.forward(
                Record(old_fk, (_UNSUBSCRIBE, key, False), ts, headers), to=self.sink
            )
        if new_fk is not None:
            self.context.forward(
                Record(new_fk, (_SUBSCRIBE, key, existed), ts, headers), to=self.sink
            )
            return
        if change.new is not None and not self.left:
            self.node.dropped(record, "null foreign key")
        new = self.joiner(change.new, None) if self.left and change.new is not None else None
        settled = _settle(self.result, key, new, record, tombstone=existed)
        if settled is not None:
            self.context.forward(settled, to=self.output)


class _SubscriptionReceive(ops.DslProcessor):
    """Right side: record who references a foreign key; answer with the right row now."""

    def __init__(self, subscriptions: SubscriptionStore, right: ValueGetter) -> None:
        self.subscriptions = subscriptions
        self.right = right

    def process(self, record: Record) -> None:
        foreign_key = record.key
        op, left_key, existed = record.value
        row = (foreign_key, left_key)
        if op == _UNSUBSCRIBE:
            if row in self.subscriptions:
                self.subscriptions.delete(row)
            return
        if row not in self.subscriptions:
            self.subscriptions[row] = 1
        right = self.right(foreign_key)
        self.emit(Record(left_key, (foreign_key, right, existed), record.timestamp, record.headers))


class _ForeignChange(ops.DslProcessor):
    """Right side: a right row changed; every left row referencing it gets the new value."""

    def __init__(self, subscriptions: SubscriptionStore) -> None:
        self.subscriptions = subscriptions

    def process(self, record: Record) -> None:
        if record.key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        for left_key in self.subscriptions.subscribers(record.key):
            self.emit(
                Record(left_key, (record.key, change.new, False), record.timestamp, record.headers)
            )


class _ResponseJoin(ops.DslProcessor):
    """Left side: join a right row with the left row as it is now.

    A response for a foreign key the left row no longer references is stale (a
    later subscription, or the row's deletion, decides) and is ignored, as KIP-213
    ignores responses whose hash no longer matches. Responses of one foreign key
    arrive in order, so the last one carries the right row's latest value.
    """

    def __init__(
        self,
        left: ValueGetter,
        foreign_key: Callable[[Any], Any],
        joiner: Joiner,
        left_join: bool,
        result: Table,
    ) -> None:
        self.left = left
        self.foreign_key = foreign_key
        self.joiner = joiner
        self.left_join = left_join
        self.result = result

    def process(self, record: Record) -> None:
        foreign_key, right, existed = record.value
        current = self.left(record.key)
        if current is None or self.foreign_key(current) != foreign_key:
            return
        new = None if right is None and not self.left_join else self.joiner(current, right)
        settled = _settle(self.result, record.key, new, record, tombstone=existed)
        if settled is not None:
            self.emit(settled)


def foreign_key_join(
    left: KTable,
    right: KTable,
    joiner: Joiner,
    how: JoinHow,
    foreign_key: Callable[[Any], Any],
    name: str | None,
) -> KTable:
    app, graph = left.app, left.app.graph
    # Kafka's KTableImpl.doJoinOnForeignKey: both sides send old values (a row that
    # moves to another foreign key unsubscribes from the old one).
    for table in (left, right):
        table.old_values.materialize()
        table.old_values.enable(True)
    base = name or graph.name("KTABLE-FK-JOIN", None)
    fk_serde = internal_serde(None, right.key_serde)
    key_serde = internal_serde(None, left.key_serde)
    registration = app.repartition_topic(
        base, fk_serde, PYTHON, None, suffix="subscription-registration"
    )
    response = app.repartition_topic(base, key_serde, PYTHON, None, suffix="subscription-response")
    result = timestamped_table(app, f"{base}-output-store", key_serde, PYTHON)
    store = f"{base}-subscription-store"
    subscriptions = SubscriptionStore(
        store,
        changelog_topic(app, store, fk_serde, serde_for(int), **{"cleanup.policy": "compact"}),
        key_serde,
    )
    app.add_store(subscriptions)
    names = {
        part: f"{base}-{part}"
        for part in (
            "subscription-send",
            "subscription-registration-sink",
            "subscription-registration-source",
            "subscription-receive",
            "foreign-change",
            "subscription-response-sink",
            "subscription-response-source",
            "response-join",
            "output",
        )
    }
    left_join = how == "left"

    # Left side: subscriptions out.
    send = graph.add(
        "KTABLE-FK-JOIN-SUBSCRIPTION-SEND",
        lambda: _SubscriptionSend(
            foreign_key,
            joiner,
            left_join,
            result,
            names["subscription-registration-sink"],
            names["output"],
        ),
        (left.node,),
        name=names["subscription-send"],
        stores=(result,),
    )
    _sink(app, registration, send, names["subscription-registration-sink"])

    # Right side: subscriptions in, right rows out (on subscription and on change).
    incoming = _source(app, registration, names["subscription-registration-source"])
    receive = graph.add(
        "KTABLE-FK-JOIN-SUBSCRIPTION-RECEIVE",
        lambda: _SubscriptionReceive(subscriptions, right.getter),
        (incoming,),
        name=names["subscription-receive"],
        stores=(subscriptions, *stores_behind(right.node)),
    )
    changes = graph.add(
        "KTABLE-FK-JOIN-FOREIGN-CHANGE",
        lambda: _ForeignChange(subscriptions),
        (right.node,),
        name=names["foreign-change"],
        stores=(subscriptions,),
    )
    _sink(app, response, receive, names["subscription-response-sink"], changes)

    # Left side: responses in, results out.
    answers = _source(app, response, names["subscription-response-source"])
    joined = graph.add(
        "KTABLE-FK-JOIN-RESPONSE",
        lambda: _ResponseJoin(left.getter, foreign_key, joiner, left_join, result),
        (answers,),
        name=names["response-join"],
        stores=(result, *stores_behind(left.node)),
    )
    output = graph.add(
        "KTABLE-FK-JOIN-OUTPUT", ops.PassThrough, (send, joined), name=names["output"]
    )

    copartition(app, f"foreign-key join {base} (subscriptions)", incoming, right.node)
    copartition(app, f"foreign-key join {base} (responses)", answers, left.node)
    return KTable(app, output, left.key_serde, None, result.get)


def _sink(app: App, topic: Topic, parent: NodeSpec, name: str, *more: NodeSpec) -> NodeSpec:
    return app.graph.add(
        "KSTREAM-SINK",
        lambda: ops.Sink(topic, {}),
        (parent, *more),
        name=name,
        kind=NodeKind.SINK,
        topics=(topic,),
    )


def _source(app: App, topic: Topic, name: str) -> NodeSpec:
    return app.graph.add(
        "KSTREAM-SOURCE", ops.PassThrough, (), name=name, kind=NodeKind.SOURCE, topics=(topic,)
    )
