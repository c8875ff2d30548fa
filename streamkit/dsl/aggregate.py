"""Processors that fold records into a table: grouped streams and grouped tables.

A table's downstream nodes receive `Change(new, old)` values, as Kafka Streams'
KTable processors do, so that a grouped table can take an old value back out of
an aggregate (the subtractor) before adding the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from ..processor import Record
from ..state.table import Table
from .operators import DslProcessor

log = logging.getLogger("streamkit.processor")


class Change(NamedTuple):
    """A table update as it travels between table nodes: the new and the old value."""

    new: Any
    old: Any


Initializer = Callable[[], Any]
Aggregator = Callable[[Any, Any, Any], Any]  # (key, value, aggregate) -> aggregate


class StreamAggregate(DslProcessor):
    """count, reduce and aggregate of a grouped stream: one table row per key."""

    def __init__(self, table: Table, initializer: Initializer, adder: Aggregator) -> None:
        self.table = table
        self.initializer = initializer
        self.adder = adder

    def process(self, record: Record) -> None:
        key, value = record.key, record.value
        if key is None or value is None:
            # Kafka Streams drops these too; counted and logged, never silently.
            self.node.dropped(record, "null key" if key is None else "null value")
            return
        old = self.table.get(key)
        new = self.adder(key, value, self.initializer() if old is None else old)
        self.table[key] = new
        self.context.forward(Record(key, Change(new, old), record.timestamp, record.headers))


def reducer_as_aggregator(reducer: Callable[[Any, Any], Any]) -> tuple[Initializer, Aggregator]:
    """reduce(fn) is aggregate() whose first value is the record's own."""
    first: Any = object()

    def add(_key: Any, value: Any, aggregate: Any) -> Any:
        return value if aggregate is first else reducer(aggregate, value)

    return (lambda: first), add


class TableSource(DslProcessor):
    """A KTable read from a topic: upsert (or delete on a tombstone) and pass the change on."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def process(self, record: Record) -> None:
        key = record.key
        if key is None:
            self.node.dropped(record, "null key")
            return
        old = self.table.get(key)
        if record.value is None:
            if old is None:
                return
            self.table.delete(key)
        else:
            self.table[key] = record.value
        self.context.forward(
            Record(key, Change(record.value, old), record.timestamp, record.headers)
        )


class TableAggregate(DslProcessor):
    """A grouped table's aggregate: subtract the old value, add the new one."""

    def __init__(
        self,
        table: Table,
        initializer: Initializer,
        adder: Aggregator,
        subtractor: Aggregator,
    ) -> None:
        self.table = table
        self.initializer = initializer
        self.adder = adder
        self.subtractor = subtractor

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        if key is None:
            self.node.dropped(record, "null key")
            return
        old = self.table.get(key)
        aggregate = self.initializer() if old is None else old
        if change.old is not None:
            aggregate = self.subtractor(key, change.old, aggregate)
        if change.new is not None:
            aggregate = self.adder(key, change.new, aggregate)
        self.table[key] = aggregate
        self.context.forward(Record(key, Change(aggregate, old), record.timestamp, record.headers))


class TableRegroup(DslProcessor):
    """KTable.group_by: map each change to the new key(s), old and new apart.

    The old value leaves its (possibly different) group and the new one joins
    its own; both travel through the repartition topic as Change records.
    """

    def __init__(self, selector: Callable[[Any, Any], tuple[Any, Any]]) -> None:
        self.selector = selector

    def process(self, record: Record) -> None:
        change: Change = record.value
        ts, headers = record.timestamp, record.headers
        if change.old is not None:
            old_key, old_value = self.selector(record.key, change.old)
            self.context.forward(Record(old_key, Change(None, old_value), ts, headers))
        if change.new is not None:
            new_key, new_value = self.selector(record.key, change.new)
            self.context.forward(Record(new_key, Change(new_value, None), ts, headers))
