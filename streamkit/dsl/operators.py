"""Processors behind the stateless KStream operators and the sinks.

Each is a Processor API node; user functions get `(key, value)` as in Kafka
Streams' lambdas (`map_values` gets the value alone, as `mapValues` does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import ConfigError
from ..events import StreamTime
from ..processor import Processor, ProcessorContext, Record
from ..topic import Topic
from ..transport.base import Headers

if TYPE_CHECKING:
    from .graph import NodeSpec

log = logging.getLogger("streamkit.processor")


class NodeContext(Protocol):
    """What DSL nodes need of the task beyond the Processor API's context.

    The runtime's context of a graph node provides it; the DSL names only this, so
    that `dsl/` does not depend on `runtime/`.
    """

    node: NodeSpec
    # The task's stream time, read by windowed nodes at every record.
    clock: StreamTime
    # The task's record writer's `write(topic, key, value, headers, timestamp)`: what a
    # sink calls for each record (serialize, partition, queue on the producer).
    write: Callable[..., None]

    def dropped(self, record: Record, reason: str, routed_to: Topic | None = None) -> None:
        """Count and log a record this node cannot use."""

    def send(self, topic: Topic, record: Record, partition: int | None = None) -> None:
        """Serialize and queue a record for `topic` on the task's producer."""

    def input_quiet_ms(self) -> float:
        """How long the task's input has been watched to be quiet."""

    def downstream(self) -> Callable[[Record], None]:
        """`forward(record)` as one callable, bound when the node starts."""

    def child_downstream(self) -> Callable[[Record], None]:
        """The `downstream()` of the node's only child."""


KeyValueFn = Callable[[Any, Any], Any]


class DslProcessor(Processor):
    """A DSL node: reaches the runtime's side of its context (sinks, drop counting).

    It hands records on with `self.emit(record)`, the context's `forward` bound once:
    a record passes a chain of DSL nodes as a chain of calls, without the context's
    frame and its loop over children at every step.
    """

    emit: Callable[[Record], None]
    # The context as the runtime's side of it: the same object, typed for DSL nodes.
    node: NodeContext

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self.node = cast("NodeContext", context)
        self.emit = self.node.downstream()

    def process_parts(self, key: Any, value: Any, headers: Headers, timestamp: int) -> None:
        """`process` for a parent that has the record's parts in hand: a node that takes
        records apart anyway (a map, a fixed-topic sink) overrides it to take them
        without a Record built for it (see `parts_taker`)."""
        self.process(Record(key, value, timestamp, headers))


# A record's parts as `process_parts` takes them: key, value, headers, timestamp.
EmitParts = Callable[[Any, Any, Headers, int], None]


def parts_taker(target: Callable[[Record], None]) -> EmitParts | None:
    """For `target`, a node's `emit` (or a `downstream()`) that is one DSL node's
    `process`: that node's `process_parts`, when it takes parts without a Record (a
    map, a fixed-topic sink), so that a parent with a new key and value in hand hands
    them on as they are. None otherwise: the parent builds the Record."""
    child = getattr(target, "__self__", None)
    if not isinstance(child, DslProcessor) or target != child.process:
        return None
    if type(child).process_parts is DslProcessor.process_parts:
        return None
    if type(child) is Sink and not isinstance(child.topic, Topic):
        return None  # a topic chooser is given the record
    return child.process_parts


class Filter(DslProcessor):
    def __init__(self, predicate: KeyValueFn, keep_if: bool) -> None:
        self.predicate = predicate
        self.keep_if = keep_if

    def process(self, record: Record) -> None:
        if bool(self.predicate(record.key, record.value)) is self.keep_if:
            self.emit(record)


class Map(DslProcessor):
    def __init__(self, fn: KeyValueFn) -> None:
        self.fn = fn
        self._emit_parts: EmitParts | None = None

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self._emit_parts = parts_taker(self.emit)

    def process(self, record: Record) -> None:
        # `process_parts`'s body again rather than a call to it: a frame less.
        key, value = self.fn(record.key, record.value)
        if self._emit_parts is not None:
            self._emit_parts(key, value, record.headers, record.timestamp)
        else:
            self.emit(Record(key, value, record.timestamp, record.headers))

    def process_parts(self, key: Any, value: Any, headers: Headers, timestamp: int) -> None:
        key, value = self.fn(key, value)
        if self._emit_parts is not None:
            self._emit_parts(key, value, headers, timestamp)
        else:
            self.emit(Record(key, value, timestamp, headers))


class MapValues(DslProcessor):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        self.emit(Record(record.key, self.fn(record.value), record.timestamp, record.headers))


class SelectKey(DslProcessor):
    def __init__(self, fn: KeyValueFn) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        key = self.fn(record.key, record.value)
        self.emit(Record(key, record.value, record.timestamp, record.headers))


class FlatMap(DslProcessor):
    def __init__(self, fn: Callable[[Any, Any], Iterable[tuple[Any, Any]]]) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        for key, value in self.fn(record.key, record.value):
            self.emit(Record(key, value, record.timestamp, record.headers))


class FlatMapValues(DslProcessor):
    def __init__(self, fn: Callable[[Any], Iterable[Any]]) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        for value in self.fn(record.value):
            self.emit(Record(record.key, value, record.timestamp, record.headers))


class Peek(DslProcessor):
    """`peek` forwards after the call; `foreach` is the same node with no children."""

    def __init__(self, fn: KeyValueFn) -> None:
        self.fn = fn

    def process(self, record: Record) -> None:
        self.fn(record.key, record.value)
        self.emit(record)


class PassThrough(DslProcessor):
    """merge, and the head of each split branch."""

    def process(self, record: Record) -> None:
        self.emit(record)


class Branch(DslProcessor):
    """Sends each record to the first branch whose predicate holds (Kafka's split())."""

    def __init__(self, branches: list[tuple[KeyValueFn | None, str]]) -> None:
        # (predicate, child node name); a None predicate is the default branch.
        self.branches = branches

    def process(self, record: Record) -> None:
        for predicate, child in self.branches:
            if predicate is None or predicate(record.key, record.value):
                self.context.forward(record, to=child)
                return


TopicChooser = Callable[[Any, Any, Record], "Topic | str"]


class Sink(DslProcessor):
    """Writes to a topic, fixed or chosen per record (Kafka's TopicNameExtractor)."""

    def __init__(self, topic: Topic | TopicChooser, topics: dict[str, Topic]) -> None:
        self.topic = topic
        self.topics = topics

    def init(self, context: ProcessorContext) -> None:
        super().init(context)
        self._write = self.node.write

    def process(self, record: Record) -> None:
        target = self.topic
        if not isinstance(target, Topic):
            chosen = target(record.key, record.value, record)
            target = self._resolve(chosen)
        self._write(target, record.key, record.value, record.headers, record.timestamp)

    def process_parts(self, key: Any, value: Any, headers: Headers, timestamp: int) -> None:
        """For a fixed topic only (`parts_taker`)."""
        self._write(self.topic, key, value, headers, timestamp)

    def _resolve(self, chosen: Topic | str) -> Topic:
        name = chosen.name if isinstance(chosen, Topic) else chosen
        topic = self.topics.get(name)
        if topic is None or (isinstance(chosen, Topic) and topic is not chosen):
            raise ConfigError(
                f"the sink's topic chooser returned topic {name!r}, which is not declared "
                "by this app: declare every topic it may choose with app.topic()"
            )
        return topic
