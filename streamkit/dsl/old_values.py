"""Kafka Streams' "send old values" of a KTable, worked out as its topology is built.

streamkit's table nodes always pass `Change(new, old)` with the old value known
(every source table has a store). Kafka Streams passes the old value only when a
node downstream asks for it (`enableSendingOldValues`): a regrouping, the outer
side of a join, a suppression; or when the table already has a store of its own
(named, or read by a join). Where that choice shows in the records out, streamkit
follows it: a filter whose table does not send old values cannot tell whether a
record it drops had passed before, so it passes the deletion on
(KTableFilterTest.shouldPassThroughWithoutMaterialization); one that does drops a
change that passes neither now nor before (shouldSkipNullToRepartition...).
Kafka decides this while the topology is built, in the order of the calls; so
does this.
"""

from __future__ import annotations


class OldValues:
    """A table that sends old values whatever is asked: an aggregation or a join's
    result, whose store holds the previous value."""

    sent = True
    # Read from a versioned table: Kafka's filter then passes every deletion on
    # (KTableFilterTest.shouldNotSkipNullIfVersionedUpstream).
    versioned = False

    def enable(self, force: bool) -> bool:
        """A node downstream asks for old values; whether it gets them. `force`:
        give the table a store if it has none (Kafka's forceMaterialization)."""
        return True

    def materialize(self) -> None:
        """A join reads the table's rows (Kafka's valueGetterSupplier)."""


class SourceOldValues(OldValues):
    """`app.ktable(topic)`: sends old values once it is materialized (named by the
    app, read by a join) and asked, or asked with force."""

    def __init__(self, materialized: bool, versioned: bool = False) -> None:
        self.materialized = materialized
        self.sent = False
        self.versioned = versioned

    def enable(self, force: bool) -> bool:
        if not self.sent:
            if not force and not self.materialized:
                return False
            self.sent = self.materialized = True
        return True

    def materialize(self) -> None:
        self.materialized = True


class DerivedOldValues(OldValues):
    """A filter or map_values: sends old values when its parent does."""

    def __init__(self, parent: OldValues, sent: bool = False) -> None:
        self.parent = parent
        self.sent = sent
        self.versioned = parent.versioned

    def enable(self, force: bool) -> bool:
        if self.parent.enable(force):
            self.sent = True
        return self.sent

    def materialize(self) -> None:
        # No store of its own: its rows are its parent's, derived when read.
        self.parent.materialize()


class JoinedOldValues(OldValues):
    """A table-table join's result: asking it asks both sides, with force."""

    def __init__(self, left: OldValues, right: OldValues) -> None:
        self.left, self.right = left, right

    def enable(self, force: bool) -> bool:
        self.left.enable(True)
        self.right.enable(True)
        return True

    def materialize(self) -> None:
        self.left.materialize()
        self.right.materialize()
