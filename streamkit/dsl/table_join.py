"""Table-table joins on the key (Kafka's KTableKTable*Join): an update of either
table joins the other's current row; the result is a table of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..processor import Record
from ..state.join_store import (
    LEFT,
    RIGHT,
)
from ..state.timestamped import ValueAndTimestamp
from . import operators as ops
from .aggregate import Change
from .join_parts import (
    Joiner,
    JoinHow,
    combine,
    copartition,
    stores_behind,
)
from .ktable import KTable, Lookup
from .old_values import JoinedOldValues

if TYPE_CHECKING:
    pass


class _TableJoinSide(ops.DslProcessor):
    """An update of one table, joined with the other's current row: old and new results,
    stamped with the later of the update's and the other row's timestamps."""

    def __init__(self, side: int, other: Lookup, joiner: Joiner, how: JoinHow) -> None:
        self.side = side
        self.other = other
        self.joiner = joiner
        self.how = how
        self.needs_other = how == "inner" or (how == "left" and side == RIGHT)

    def process(self, record: Record) -> None:
        if record.key is None:
            self.node.dropped(record, "null key")
            return
        change: Change = record.value
        row = self.other(record.key)
        if row is None:
            # Kafka's KTableKTable*Join: without the other row, an inner join (and a
            # left join's right side) has nothing to say; the outer sides pass on
            # what changed. With the other row, every update is passed on, even a
            # deletion of a row that was not there (its old value may not be known).
            if self.needs_other or (change.new is None and change.old is None):
                return
            other, ts = None, record.timestamp
        else:
            other, ts = row[0], max(row[1], record.timestamp)
        if self.side == LEFT:
            new = combine(self.how, self.joiner, change.new, other)
            old = combine(self.how, self.joiner, change.old, other)
        else:
            new = combine(self.how, self.joiner, other, change.new)
            old = combine(self.how, self.joiner, other, change.old)
        self.emit(Record(record.key, Change(new, old), ts, record.headers))


def table_table(
    left: KTable, right: KTable, joiner: Joiner, how: JoinHow, name: str | None
) -> KTable:
    app, graph = left.app, left.app.graph
    # Kafka's KTableImpl.doJoin: both tables are read by the join; the outer side(s)
    # send old values (a left row without a match is a result to take back later).
    left.old_values.materialize()
    right.old_values.materialize()
    if how != "inner":
        left.old_values.enable(True)
    if how == "outer":
        right.old_values.enable(True)
    this = graph.add(
        "KTABLE-JOINTHIS",
        lambda: _TableJoinSide(LEFT, right.lookup, joiner, how),
        (left.node,),
        name=f"{name}-this" if name else None,
        stores=stores_behind(right.node),
    )
    that = graph.add(
        "KTABLE-JOINOTHER",
        lambda: _TableJoinSide(RIGHT, left.lookup, joiner, how),
        (right.node,),
        name=f"{name}-other" if name else None,
        stores=stores_behind(left.node),
    )
    merge = graph.add("KTABLE-MERGE", ops.PassThrough, (this, that), name=name)
    left_get, right_get = left.lookup, right.lookup

    def get(key: Any) -> ValueAndTimestamp | None:
        lrow, rrow = left_get(key), right_get(key)
        lval = None if lrow is None else lrow[0]
        rval = None if rrow is None else rrow[0]
        joined = combine(how, joiner, lval, rval)
        if joined is None:
            return None
        stamps = [r[1] for r in (lrow, rrow) if r is not None]
        return ValueAndTimestamp(joined, max(stamps))

    copartition(app, f"join {merge.name}", left.node, right.node)
    old_values = JoinedOldValues(left.old_values, right.old_values)
    return KTable(app, merge, left.key_serde, None, get, old_values)
