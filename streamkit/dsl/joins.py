"""Joins: stream-stream (windowed), stream-table, table-table and foreign-key table-table,
with Kafka Streams' semantics; stream-GlobalKTable joins are dispatched to global_table.py.

Every join but the global one needs both inputs in one task: it registers a
co-partition group, which the Topology checks at start-up (DESIGN.md invariant
5), and a stream whose key may have changed is repartitioned first. A
foreign-key join cannot be co-partitioned (the right table is keyed by the
foreign key), so it crosses between the two tables' tasks through two internal
topics, as KIP-213 does: subscriptions keyed by the foreign key, responses keyed
by the left key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .foreign_key_join import foreign_key_join
from .join_parts import Joiner, JoinHow
from .kstream import KStream
from .ktable import KTable
from .stream_stream_join import stream_stream
from .stream_table_join import stream_table
from .table_join import table_table
from .windows import Duration, JoinWindows, duration_ms

if TYPE_CHECKING:
    from ..app import App


def stream_join(
    stream: KStream,
    other: Any,
    joiner: Joiner,
    how: JoinHow,
    *,
    window: JoinWindows | None = None,
    key_selector: Callable[[Any, Any], Any] | None = None,
    grace: Duration | None = None,
    name: str | None = None,
) -> KStream:
    _refuse(
        grace is not None and not isinstance(other, KTable),
        "grace= is for stream-table joins (a stream-stream join's is in its JoinWindows)",
    )
    if isinstance(other, KStream):
        if window is None:
            raise ConfigError("a stream-stream join needs window=JoinWindows(...)")
        _refuse(key_selector is not None, "key_selector= is for GlobalKTable joins")
        _same_app(stream.app, other.app)
        return stream_stream(stream, other, joiner, how, window, name)
    if isinstance(other, KTable):
        _refuse(how == "outer", "a KStream has no outer join with a KTable (Kafka Streams)")
        _refuse(window is not None, "window= is for stream-stream joins")
        _refuse(key_selector is not None, "key_selector= is for GlobalKTable joins")
        _same_app(stream.app, other.app)
        return stream_table(
            stream, other, joiner, how, None if grace is None else duration_ms(grace), name
        )
    _refuse(window is not None, "window= is for stream-stream joins")
    joined = _global_join(stream, other, joiner, how, key_selector, name)
    if joined is None:
        raise ConfigError(
            f"a KStream joins a KStream, a KTable or a GlobalKTable, not {type(other).__name__}"
        )
    return joined


def table_join(
    table: KTable,
    other: KTable,
    joiner: Joiner,
    how: JoinHow,
    *,
    foreign_key: Callable[[Any], Any] | None = None,
    name: str | None = None,
) -> KTable:
    if not isinstance(other, KTable):
        raise ConfigError(f"a KTable joins a KTable, not {type(other).__name__}")
    _same_app(table.app, other.app)
    if foreign_key is not None:
        _refuse(how == "outer", "a foreign-key join is inner or left (Kafka Streams)")
        return foreign_key_join(table, other, joiner, how, foreign_key, name)
    return table_table(table, other, joiner, how, name)


def _refuse(condition: bool, reason: str) -> None:
    if condition:
        raise ConfigError(reason)


def _same_app(a: App, b: App) -> None:
    if a is not b:
        raise ConfigError(f"cannot join across apps ({a.id!r} and {b.id!r})")


def _global_join(
    stream: KStream,
    other: Any,
    joiner: Joiner,
    how: JoinHow,
    key_selector: Callable[[Any, Any], Any] | None,
    name: str | None,
) -> KStream | None:
    """Lazily: global tables live in their own module, which must not import this one."""
    try:
        from .global_table import GlobalKTable, global_join
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.global_table":
            raise
        return None
    if not isinstance(other, GlobalKTable):
        return None
    _refuse(how == "outer", "a KStream has no outer join with a GlobalKTable (Kafka Streams)")
    if key_selector is None:
        raise ConfigError(
            "a GlobalKTable join needs key_selector=lambda key, value: <the table's key>"
        )
    result: KStream = global_join(stream, other, joiner, how, key_selector, name=name)
    return result
