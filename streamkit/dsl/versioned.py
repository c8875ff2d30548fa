"""A versioned KTable's source (KIP-889/914): history kept, out-of-order updates quiet.

An update at least as new as the key's latest version becomes the latest and is
passed on, as an ordinary KTable's is. An older one (out of order) only enters
the history, where timestamped lookups (a stream-table join) find it; it changes
no downstream result, as in Kafka Streams. An update older than the history
retention behind the source's stream time is dropped (counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..processor import Record
from ..state.versioned import History, VersionedTable
from ..topic import Topic
from . import operators as ops
from .aggregate import Change
from .old_values import SourceOldValues

if TYPE_CHECKING:
    from ..app import App
    from .graph import NodeSpec
    from .ktable import KTable


class VersionedTableSource(ops.DslProcessor):
    def __init__(self, table: VersionedTable) -> None:
        self.table = table
        self.retention = table.history_retention_ms
        # The largest timestamp this source has seen: its store's clock, as in Kafka.
        self._observed: int | None = None

    def process(self, record: Record) -> None:
        key, value, ts = record.key, record.value, record.timestamp
        if key is None:
            self.node.dropped(record, "null key")
            return
        observed = self._observed = ts if self._observed is None else max(self._observed, ts)
        history: History = self.table.get(key) or []
        if history and ts < history[0][0]:
            if ts < observed - self.retention:
                self.node.dropped(record, "older than the versioned table's history retention")
                return
            self._store(key, self._insert(history, ts, value), observed)
            return  # an out-of-order version: the latest result does not change
        old = history[0][1] if history else None
        if value is None and old is None:
            # Deleting what is not there: no version to keep, but the record goes on,
            # as every record of Kafka's KTableSource does.
            self.emit(Record(key, Change(None, None), ts, record.headers))
            return
        rest = history[1:] if history and history[0][0] == ts else history
        self._store(key, [(ts, value), *rest], observed)
        self.emit(Record(key, Change(value, old), ts, record.headers))

    @staticmethod
    def _insert(history: History, ts: int, value: Any) -> History:
        kept = [version for version in history if version[0] != ts]
        kept.append((ts, value))
        kept.sort(key=lambda version: -version[0])
        return kept

    def _store(self, key: Any, history: History, observed: int) -> None:
        """Keep the versions still valid within the retention: every one newer than the
        cutoff, and the one valid at it."""
        cutoff = observed - self.retention
        for index, (valid_from, _) in enumerate(history):
            if valid_from <= cutoff:
                history = history[: index + 1]
                break
        self.table[key] = history


def versioned_ktable(
    app: App, topic: Topic, store: str, source: NodeSpec, history_retention_s: float
) -> KTable:
    """`app.ktable(topic, history_retention=...)`: a versioned table with its own changelog."""
    from .ktable import KTable

    retention_ms = round(history_retention_s * 1000)
    if retention_ms < 0:
        raise ConfigError(f"history_retention must be >= 0, got {history_retention_s} s")
    changelog = Topic(
        f"{app.id}-{store}-changelog",
        key_type=topic.key_serde,
        value_type=topic.value_serde,
        config={"cleanup.policy": "compact"},
    )
    table = VersionedTable(store, changelog, topic.value_serde, retention_ms)
    app.add_store(table)
    node = app.graph.add(
        "KTABLE-SOURCE", lambda: VersionedTableSource(table), (source,), stores=(table,)
    )
    # A versioned store is always materialized (Kafka: Materialized with a versioned store).
    old_values = SourceOldValues(materialized=True, versioned=True)
    ktable = KTable(app, node, topic.key_serde, topic.value_serde, table.latest, old_values)
    ktable.versioned = table
    return ktable
