"""GlobalKTable: a topic's latest value per key, copied whole into every worker.

Unlike a KTable it is not partitioned with the stream that reads it: every worker
reads all partitions of the topic into its own store (runtime/global_tables.py)
before any task starts, and tails it while running. So a stream joins it at any
key it computes from a record (`key_selector`), with no repartition and no
co-partitioning, at the cost of a full copy per worker (seed 001).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, StateError
from ..processor import Record
from ..topic import Topic
from .kstream import KStream
from .operators import DslProcessor

if TYPE_CHECKING:
    from ..app import App
    from ..state.global_store import GlobalStore

GlobalJoinHow = Literal["inner", "left"]


class GlobalKTable:
    """`app.global_ktable(topic)`: read-only; `get(key)` answers from this worker's copy."""

    def __init__(self, app: App, topic: Topic, name: str) -> None:
        self.app = app
        self.topic = topic
        self.name = name
        # Set by the worker's loader (or the test driver) once the table is loaded.
        self._store: GlobalStore | None = None

    def __repr__(self) -> str:
        return f"<GlobalKTable {self.name} of {self.topic.name}>"

    @property
    def store(self) -> GlobalStore:
        if self._store is None:
            raise StateError(
                f"global table {self.name!r} is not loaded: it is readable inside a running "
                "worker or TopologyTestDriver of its app, once loaded"
            )
        return self._store

    def bind(self, store: GlobalStore) -> None:
        """Make the loaded store this table's answer (one worker per app and process)."""
        self._store = store

    def unbind(self) -> None:
        self._store = None

    def get(self, key: Any, default: Any = None) -> Any:
        """The key's current value in this worker's copy, or `default` if it has none."""
        return self.store.get(key, default)


class GlobalJoin(DslProcessor):
    """Looks each stream record up in the global table at `key_selector(key, value)`."""

    def __init__(
        self,
        table: GlobalKTable,
        joiner: Callable[[Any, Any], Any],
        key_selector: Callable[[Any, Any], Any],
        left: bool,
    ) -> None:
        self.table = table
        self.joiner = joiner
        self.key_selector = key_selector
        self.left = left

    def process(self, record: Record) -> None:
        """As Kafka Streams (KIP-962): a left join passes a record with a null key on,
        looked up at its selected key; otherwise a null value or a None selected key
        has nothing to join and is dropped (counted)."""
        if record.value is None:
            self.node.dropped(record, "null value")
            return
        lookup = self.key_selector(record.key, record.value)
        if lookup is None and not (self.left and record.key is None):
            self.node.dropped(record, "null lookup key")
            return
        other = None if lookup is None else self.table.get(lookup)
        if other is None and not self.left:
            return
        joined = self.joiner(record.value, other)
        self.emit(Record(record.key, joined, record.timestamp, record.headers))


def global_join(
    stream: KStream,
    global_table: GlobalKTable,
    joiner: Callable[[Any, Any], Any],
    how: GlobalJoinHow,
    key_selector: Callable[[Any, Any], Any],
    *,
    name: str | None = None,
) -> KStream:
    """`joiner(value, table_value)` per stream record; the output keeps the stream's key.

    An inner join passes on only records whose lookup key is in the table; a left
    join passes every record, with `table_value` None where the table has nothing.
    """
    if how not in ("inner", "left"):
        raise ConfigError(f"a GlobalKTable join is 'inner' or 'left', not {how!r}")
    if global_table.app is not stream.app:
        raise ConfigError(
            f"cannot join across apps ({stream.app.id!r} and {global_table.app.id!r})"
        )
    left = how == "left"
    node = stream.app.graph.add(
        "KSTREAM-LEFTJOIN" if left else "KSTREAM-JOIN",
        lambda: GlobalJoin(global_table, joiner, key_selector, left),
        (stream.node,),
        name=name,
    )
    return KStream(stream.app, node, stream.key_serde, None, rekeyed=stream.rekeyed)
