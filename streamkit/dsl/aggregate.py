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
    """count, reduce and aggregate of a grouped stream: one table row per key.

    Rows are `ValueAndTimestamp`: a result is stamped with the larger of the
    record's timestamp and the previous aggregate's, as Kafka Streams does, so an
    out-of-order record does not move a result back in time.
    """

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
        held = self.table.get(key)
        ts = record.timestamp
        if held is None:
            old = None
            new = self.adder(key, value, self.initializer())
        else:
            old = held[0]
            new = self.adder(key, value, old)
            if held[1] > ts:
                ts = held[1]
        if new is None:  # Kafka deletes the row: the next record starts afresh
            self.table.delete(key)
        else:
            # A plain (value, timestamp) pair: what a ValueAndTimestamp row is, built
            # without the NamedTuple constructor's cost on the hot path.
            self.table[key] = (new, ts)
        self.emit(Record(key, Change(new, old), ts, record.headers))


def reducer_as_aggregator(reducer: Callable[[Any, Any], Any]) -> tuple[Initializer, Aggregator]:
    """reduce(fn) is aggregate() whose first value is the record's own."""
    first: Any = object()

    def add(_key: Any, value: Any, aggregate: Any) -> Any:
        return value if aggregate is first else reducer(aggregate, value)

    return (lambda: first), add


class TableSource(DslProcessor):
    """A KTable read from a topic: upsert (or delete on a tombstone) and pass the change on.

    The store keeps each row's record timestamp, which table-table joins and
    timestamped store reads need. Every record is passed on, as Kafka Streams'
    KTableSource does (KTableSourceTest.testKTable): an update repeating the row's
    value (KIP-557's drop of these is disabled in Kafka, KAFKA-12508), and a
    tombstone for a key without a row (`Change(None, None)`, which filters and
    joins judge as Kafka's do).
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def process(self, record: Record) -> None:
        key = record.key
        if key is None:
            self.node.dropped(record, "null key")
            return
        held = self.table.get(key)
        old = None if held is None else held[0]
        if record.value is None:
            if held is not None:
                self.table.delete(key)
        else:
            self.table[key] = (record.value, record.timestamp)  # a ValueAndTimestamp row
        self.emit(Record(key, Change(record.value, old), record.timestamp, record.headers))


class TableAggregate(DslProcessor):
    """A grouped table's aggregate: subtract the old value, add the new one, emit once.

    A row that changes within its group arrives as one Change with both values
    (KIP-904), so the group's aggregate moves in one step: no transient result
    without the row. The result's timestamp is the larger of the update's and
    the previous aggregate's. As in Kafka Streams, an aggregate a subtractor
    turns into None is deleted (and emitted as a deletion); the next row to join
    the group starts again from the initializer.
    """

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
        held = self.table.get(key)
        ts = record.timestamp
        old = aggregate = None
        if held is not None:
            old = aggregate = held[0]
            ts = max(ts, held[1])
        if change.old is not None and aggregate is not None:
            aggregate = self.subtractor(key, change.old, aggregate)
        if change.new is not None:
            start = self.initializer() if aggregate is None else aggregate
            aggregate = self.adder(key, change.new, start)
        if aggregate is None:
            self.table.delete(key)
        else:
            self.table[key] = (aggregate, ts)  # a ValueAndTimestamp row
        self.emit(Record(key, Change(aggregate, old), ts, record.headers))


class TableRegroup(DslProcessor):
    """KTable.group_by: map each change to the new key(s).

    A row that stays in its group travels as one Change(new, old) (KIP-904); one
    that moves leaves its old group (Change(None, old)) before it joins the new one
    (Change(new, None)). A selector that gives no pair, or a None key or value,
    skips that side, as Kafka Streams does (counted as dropped).
    """

    def __init__(self, selector: Callable[[Any, Any], tuple[Any, Any] | None]) -> None:
        self.selector = selector

    def _select(self, record: Record, value: Any) -> tuple[Any, Any] | None:
        if value is None:
            return None
        pair = self.selector(record.key, value)
        if pair is None or pair[0] is None or pair[1] is None:
            self.node.dropped(record, "group_by selected a None key or value")
            return None
        return pair

    def process(self, record: Record) -> None:
        change: Change = record.value
        ts, headers = record.timestamp, record.headers
        old = self._select(record, change.old)
        new = self._select(record, change.new)
        if old is not None and new is not None and old[0] == new[0]:
            self.emit(Record(new[0], Change(new[1], old[1]), ts, headers))
            return
        if old is not None:
            self.emit(Record(old[0], Change(None, old[1]), ts, headers))
        if new is not None:
            self.emit(Record(new[0], Change(new[1], None), ts, headers))
