"""Stream-table joins (Kafka's KStreamKTableJoin): each stream record looks up the
table's row as of now, or, over a versioned table with a grace, waits in a buffer
until stream time has passed it by the grace and joins the version of its time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

from ..errors import ConfigError
from ..processor import ProcessorContext, Record
from ..state.join_store import (
    PendingJoins,
    ValuesSerde,
)
from ..state.timestamped import ValueAndTimestamp
from . import operators as ops
from .join_parts import (
    Joiner,
    JoinHow,
    changelog_topic,
    copartition,
    stores_behind,
)
from .kstream import KStream, internal_serde
from .ktable import KTable, Lookup, task_lookup

if TYPE_CHECKING:
    pass


class _StreamTableJoin(ops.DslProcessor):
    """Looks the table up as each stream record arrives; table updates emit nothing.
    The result keeps the stream record's timestamp, as in Kafka Streams. A versioned
    table is looked up as of the stream record's timestamp (KIP-914)."""

    def __init__(
        self,
        lookup: Lookup,
        joiner: Joiner,
        left: bool,
        as_of: Callable[[Any, int], ValueAndTimestamp | None] | None = None,
    ) -> None:
        self.lookup = lookup
        self.joiner = joiner
        self.left = left
        self.as_of = as_of

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self.lookup = task_lookup(self.lookup)
        self._emit_parts = ops.parts_taker(self.emit)

    def process(self, record: Record) -> None:
        if record.value is None:
            self.node.dropped(record, "null value")
            return
        if record.key is None:
            # KIP-962: a left join passes a null-key record on, joined with nothing.
            if self.left:
                self.emit(record.with_value(self.joiner(record.value, None)))
            else:
                self.node.dropped(record, "null key")
            return
        if self.as_of is None:
            row = self.lookup(record.key)
        else:
            row = self.as_of(record.key, record.timestamp)
        if row is None:
            if not self.left:
                return
            found = None
        else:
            found = row[0]
        if self._emit_parts is not None:
            self._emit_parts(
                record.key, self.joiner(record.value, found), record.headers, record.timestamp
            )
        else:
            self.emit(
                Record(
                    record.key, self.joiner(record.value, found), record.timestamp, record.headers
                )
            )


class _BufferedStreamTableJoin(_StreamTableJoin):
    """A stream-table join with a grace over a versioned table (KIP-923): a stream
    record waits until the join's stream time is `grace` past it, so that table
    updates up to then (out of order included) reach it; it then joins the version
    valid at its timestamp. Records leave in timestamp order, ties in arrival order;
    one already that far behind joins at once.

    The waiting records are in a store with a changelog, keyed (key, timestamp,
    arrival number), and indexed in memory by (timestamp, arrival number).
    """

    def __init__(
        self,
        lookup: Lookup,
        joiner: Joiner,
        left: bool,
        as_of: Callable[[Any, int], ValueAndTimestamp | None],
        grace_ms: int,
        buffer: PendingJoins,
    ) -> None:
        super().__init__(lookup, joiner, left, as_of)
        self.grace_ms = grace_ms
        self.buffer = buffer
        self._index: SortedList | None = None
        self._next = 0
        self._observed: int | None = None

    def process(self, record: Record) -> None:
        ts = record.timestamp
        observed = self._observed = ts if self._observed is None else max(self._observed, ts)
        deadline = observed - self.grace_ms
        if ts <= deadline or record.key is None or record.value is None:
            super().process(record)  # on time for nothing, or nothing to wait for
        else:
            index = self._waiting()
            self.buffer[record.key, ts, self._next] = [record.value]
            index.add((ts, self._next, record.key))
            self._next += 1
        index = self._waiting()
        while index and index[0][0] <= deadline:
            ts, number, key = index.pop(0)
            row = (key, ts, number)
            values = self.buffer.get(row)
            self.buffer.delete(row)
            for value in values or ():
                super().process(Record(key, value, ts))

    def _waiting(self) -> SortedList:
        if self._index is None:
            self._index = SortedList(
                (ts, number, key) for (key, ts, number), _values in self.buffer.items()
            )
            self._next = 1 + max((entry[1] for entry in self._index), default=-1)
        return self._index


def stream_table(
    stream: KStream,
    table: KTable,
    joiner: Joiner,
    how: JoinHow,
    grace_ms: int | None,
    name: str | None,
) -> KStream:
    app = stream.app
    table.old_values.materialize()
    stream = stream.keyed_for_grouping(f"{name}-left" if name else None)
    versioned = table.versioned
    as_of = None if versioned is None else versioned.as_of
    left = how == "left"
    prefix = "KSTREAM-JOIN" if how == "inner" else "KSTREAM-LEFTJOIN"
    stores = stores_behind(table.node)
    if grace_ms is None:

        def factory() -> _StreamTableJoin:
            return _StreamTableJoin(table.lookup, joiner, left, as_of)

    else:
        if versioned is None:
            raise ConfigError(
                "a stream-table join with a grace needs a versioned table: "
                "app.ktable(topic, history_retention=...)"
            )
        if versioned.history_retention_ms < grace_ms:
            raise ConfigError(
                f"the table's history retention ({versioned.history_retention_ms} ms) must be "
                f"at least the join's grace ({grace_ms} ms)"
            )
        store = f"{app.graph.name(prefix, name)}-buffer"
        key_serde = internal_serde(None, stream.key_serde)
        buffer = PendingJoins(
            store,
            changelog_topic(
                app,
                store,
                key_serde,
                ValuesSerde(internal_serde(None, stream.value_serde)),
                **{"cleanup.policy": "compact"},
            ),
        )
        app.add_store(buffer)
        stores = (*stores, buffer)
        versioned_as_of = versioned.as_of

        def factory() -> _StreamTableJoin:  # type: ignore[misc]
            return _BufferedStreamTableJoin(
                table.lookup, joiner, left, versioned_as_of, grace_ms, buffer
            )

    node = app.graph.add(prefix, factory, (stream.node,), name=name, stores=stores)
    copartition(app, f"join {node.name}", stream.node, table.node)
    return KStream(app, node, stream.key_serde, None)
