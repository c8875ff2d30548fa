"""One processor graph (DSL and Processor API nodes) inside one task.

The task hands it a decoded batch; each record enters at its topic's source node
and runs through the graph synchronously, depth first, as in Kafka Streams: a
node's outputs reach the sinks and stores before the next record starts, so no
await separates records and a batch costs one call. Stream-time punctuations
fire between records; wall-clock ones when the task asks (it wakes for them even
without input, so windows close on idle partitions).
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

from ..dsl.graph import NodeKind, NodeSpec, ProcessorGraph
from ..dsl.operators import PassThrough
from ..errors import ConfigError, StreamkitError
from ..events import Event, StreamTime
from ..metrics import Metrics
from ..processor import (
    Cancellable,
    Processor,
    ProcessorContext,
    PunctuationType,
    Record,
)
from ..state.table import Table, current_stores, key_in_hand
from ..state.task_store import TaskStore
from ..topic import ErrorPolicy, Topic
from ..transport.base import RawRecord
from .failures import FailureRouter
from .record_writer import RecordWriter, current_writer

log = logging.getLogger("streamkit.processor")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Punctuation(Cancellable):
    __slots__ = ("callback", "cancelled", "context", "interval_ms", "kind", "next_ms")

    def __init__(
        self,
        context: NodeContext,
        interval_ms: int,
        kind: PunctuationType,
        callback: Callable[[int], None],
        next_ms: int | None,
    ) -> None:
        self.context = context
        self.interval_ms = interval_ms
        self.kind = kind
        self.callback = callback
        self.next_ms = next_ms
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class NodeContext(ProcessorContext):
    """A node's view of its task: its children, its stores, the record in hand."""

    def __init__(self, runner: GraphRunner, node: NodeSpec) -> None:
        self._runner = runner
        self.node = node
        self._children: list[Processor] = []
        self._by_name: dict[str, Processor] = {}
        self._stores = {t.name: t for t in node.stores}
        self.write = runner.writer.write
        self.clock = runner.clock

    def connect(self, processors: Mapping[str, Processor]) -> None:
        self._children = [processors[c.name] for c in self.node.children]
        self._by_name = {c.name: processors[c.name] for c in self.node.children}

    def downstream(self) -> Callable[[Record], None]:
        """What `forward(record)` does, as one callable bound once: the only child's own
        `process` when there is one, so a DSL node hands a record on without a frame of
        the context's in between. Pass-through children (a source, a merge, a split's
        branch heads) are looked through: their children take the record directly."""
        targets = self._targets()
        if len(targets) == 1:
            return targets[0]

        def forward_all(record: Record) -> None:
            for target in targets:
                target(record)

        return forward_all

    def child_downstream(self) -> Callable[[Record], None]:
        (child,) = self._children
        return self._runner.contexts[child].downstream()

    def _targets(self) -> list[Callable[[Record], None]]:
        found: list[Callable[[Record], None]] = []
        for child in self._children:
            if type(child) is PassThrough:
                found.extend(self._runner.contexts[child]._targets())
            else:
                found.append(child.process)
        return found

    @property
    def app_id(self) -> str:
        return self._runner.app_id

    @property
    def task_id(self) -> str:
        return self._runner.task_name

    @property
    def partition(self) -> int:
        return self._runner.partition

    @property
    def topic(self) -> str | None:
        event = self._runner.current
        return None if event is None else event.topic

    @property
    def offset(self) -> int | None:
        event = self._runner.current
        return None if event is None else event.offset

    @property
    def stream_time_ms(self) -> int | None:
        return self._runner.clock.ms

    @property
    def wall_clock_ms(self) -> int:
        return self._runner.wall_clock()

    def input_quiet_ms(self) -> float:
        """How long the task's input has been watched to be quiet: every partition
        processed to the end the broker reports, without a break. Input that is late
        in coming (a frozen process, a broker that stood still, a rebalance) is not
        quiet input."""
        return self._runner.input_quiet_ms()

    def forward(self, record: Record, to: str | None = None) -> None:
        if to is None:
            for child in self._children:
                child.process(record)
            return
        child = self._by_name.get(to)
        if child is None:
            raise ConfigError(
                f"node {self.node.name!r} has no child named {to!r}; its children are "
                f"{', '.join(repr(c.name) for c in self.node.children) or 'none'}"
            )
        child.process(record)

    def store(self, name: str) -> Table:
        table = self._stores.get(name)
        if table is None:
            raise ConfigError(
                f"node {self.node.name!r} is not connected to store {name!r}: pass "
                f"stores=[...] where it is added (connected: {', '.join(self._stores) or 'none'})"
            )
        return table

    def schedule(
        self, interval_s: float, kind: PunctuationType, callback: Callable[[int], None]
    ) -> Cancellable:
        if interval_s <= 0:
            raise ConfigError(f"node {self.node.name!r}: punctuation interval must be > 0")
        return self._runner.schedule(self, int(interval_s * 1000), PunctuationType(kind), callback)

    def commit(self) -> None:
        self._runner.commit_requested = True

    def dropped(self, record: Record, reason: str, routed_to: Topic | None = None) -> None:
        """A record this node cannot use: counted, and logged with where it came from
        (and where it went instead, when a policy routes it to a topic)."""
        self._runner.dropped(self.node.name, record, reason, routed_to)

    def send(self, topic: Topic, record: Record, partition: int | None = None) -> None:
        """What a sink node does: serialize and queue on the worker's producer."""
        self.write(topic, record.key, record.value, record.headers, record.timestamp, partition)


class GraphRunner:
    def __init__(
        self,
        graph: ProcessorGraph,
        app_id: str,
        task_name: str,
        partition: int,
        writer: RecordWriter,
        failures: FailureRouter,
        raw_of: Callable[[Event], RawRecord],
        stores: Mapping[str, TaskStore],
        clock: StreamTime,
        metrics: Metrics,
        wall_clock: Callable[[], int] = wall_clock_ms,
        input_quiet_ms: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self.metrics = metrics
        self.input_quiet_ms = input_quiet_ms
        self._drops: dict[tuple[str, str], int] = {}
        self.graph = graph
        self.app_id = app_id
        self.task_name = task_name
        self.partition = partition
        self.writer = writer
        self.clock = clock
        self.wall_clock = wall_clock
        self._failures = failures
        self._raw_of = raw_of
        self._context = contextvars.copy_context()
        self._context.run(current_stores.set, {t.name: stores[t.name] for t in graph.tables})
        self._context.run(current_writer.set, writer)
        self._context.run(key_in_hand.set, self._key_in_hand)
        self._processors: dict[str, Processor] = {}
        self.contexts: dict[Processor, NodeContext] = {}
        # Per source topic: where its records go (the source node looked through) and
        # its timestamp extractor.
        self._entry: dict[str, tuple[Callable[[Record], None], Callable[[Record], int] | None]] = {}
        self._stream_punctuations: list[Punctuation] = []
        self._wall_punctuations: list[Punctuation] = []
        self.current: Event | None = None
        self.commit_requested = False

    def _key_in_hand(self) -> bytes | None:
        return None if self.current is None else self._raw_of(self.current).key

    def start(self) -> None:
        """Instantiate and init the graph's processors for this task."""
        self._context.run(self._start)

    def _start(self) -> None:
        nodes = self.graph.nodes
        processors = {n.name: n.factory() for n in nodes}
        contexts = {n.name: NodeContext(self, n) for n in nodes}
        for context in contexts.values():
            context.connect(processors)
        self._processors = processors
        self.contexts = {processors[name]: c for name, c in contexts.items()}
        self._entry = {
            t.name: (self._entry_of(processors[n.name], contexts[n.name]), n.timestamp_extractor)
            for n in nodes
            if n.kind is NodeKind.SOURCE
            for t in n.topics
        }
        for n in nodes:
            processors[n.name].init(contexts[n.name])

    @staticmethod
    def _entry_of(source: Processor, context: NodeContext) -> Callable[[Record], None]:
        """A source node passes records on unchanged: its children take them directly."""
        return context.downstream() if type(source) is PassThrough else source.process

    def schedule(
        self,
        context: NodeContext,
        interval_ms: int,
        kind: PunctuationType,
        callback: Callable[[int], None],
    ) -> Punctuation:
        if kind is PunctuationType.WALL_CLOCK:
            p = Punctuation(context, interval_ms, kind, callback, self.wall_clock() + interval_ms)
            self._wall_punctuations.append(p)
        else:
            # Aligned to 0, as Kafka Streams' StreamTask.schedule does: due as soon as
            # there is data, then at each multiple of the interval stream time reaches
            # (TopologyTestDriverTest.shouldPunctuateOnStreamsTime).
            p = Punctuation(context, interval_ms, kind, callback, 0)
            self._stream_punctuations.append(p)
        return p

    @staticmethod
    def _earliest(punctuations: list[Punctuation]) -> int | None:
        due = [p.next_ms for p in punctuations if p.next_ms is not None and not p.cancelled]
        return min(due) if due else None

    async def process(self, batch: Sequence[Event]) -> None:
        self._context.run(self._process, batch)

    def _process(self, batch: Sequence[Event]) -> None:
        entry = self._entry
        clock = self.clock
        # Batches are mostly of one topic: its entry is looked up when the topic changes.
        topic = None
        enter: Callable[[Record], None] | None = None
        extractor: Callable[[Record], int] | None = None
        for event in batch:
            if event.topic != topic:
                topic = event.topic
                enter, extractor = entry.get(topic, (None, None))
            if enter is None:
                continue
            self.current = event
            record = Record(event.key, event.value, event.timestamp, event.headers)
            try:
                if extractor is not None:
                    record.timestamp = extractor(record)
                if clock.ms is None or record.timestamp > clock.ms:
                    clock.ms = record.timestamp
                enter(record)
            except Exception as exc:
                # Raises AgentError under the `fail` policy; otherwise the record is dealt with.
                node = self._node_that_raised(exc)
                self._failures.agent_failed(node, self._raw_of(event), exc, self.graph.on_error)
                log.debug("node %s raised", node, exc_info=exc)
            if self._stream_punctuations and clock.ms is not None:
                self._punctuate_stream(clock.ms)
        self.current = None

    def _node_that_raised(self, exc: BaseException) -> str:
        """The innermost processor in the traceback: the operator whose function raised.

        Found only when something failed, so the hot path pays nothing for it.
        """
        names = {id(p): name for name, p in self._processors.items()}
        found = self.graph.name
        tb = exc.__traceback__
        while tb is not None:
            name = names.get(id(tb.tb_frame.f_locals.get("self")))
            if name is not None:
                found = name
            tb = tb.tb_next
        return found

    def _punctuate_stream(self, now_ms: int) -> None:
        for p in self._stream_punctuations:
            if not p.cancelled and p.next_ms is not None and now_ms >= p.next_ms:
                self._fire(p, now_ms)
        self._stream_punctuations = [p for p in self._stream_punctuations if not p.cancelled]

    def next_wall_clock_ms(self) -> int | None:
        """When the earliest wall-clock punctuation is due; the task wakes for it."""
        return self._earliest(self._wall_punctuations)

    def punctuate_wall_clock(self) -> None:
        self._context.run(self._punctuate_wall_clock)

    def _punctuate_wall_clock(self) -> None:
        now = self.wall_clock()
        for p in self._wall_punctuations:
            if not p.cancelled and p.next_ms is not None and now >= p.next_ms:
                self._fire(p, now)
        self._wall_punctuations = [p for p in self._wall_punctuations if not p.cancelled]

    def _fire(self, p: Punctuation, now_ms: int) -> None:
        assert p.next_ms is not None
        # Once per due time, even if several intervals passed (as Kafka Streams does).
        p.next_ms += ((now_ms - p.next_ms) // p.interval_ms + 1) * p.interval_ms
        current, self.current = self.current, None
        try:
            p.callback(now_ms)
        except Exception as exc:
            node = p.context.node.name
            if self.graph.on_error is ErrorPolicy.FAIL:
                raise StreamkitError(
                    f"task {self.task_name}: {p.kind.value} punctuation of node {node!r} "
                    f"raised {type(exc).__name__}: {exc}"
                ) from exc
            self.metrics.agent_errors.labels(node, self.graph.on_error.value).inc()
            log.exception(
                "task %s: punctuation of node %r raised; it runs again", self.task_name, node
            )
        finally:
            self.current = current

    def dropped(
        self, node: str, record: Record, reason: str, routed_to: Topic | None = None
    ) -> None:
        self.metrics.dropped_records.labels(node, reason).inc()
        event = self.current
        where = "" if event is None else f" ({event.topic}[{event.partition}]@{event.offset})"
        count = self._drops[node, reason] = self._drops.get((node, reason), 0) + 1
        # The first and then every 1000th: a flood of late records must not flood the log.
        if count % 1000 == 1:
            log.warning(
                "task %s: node %s %s a record%s with timestamp %d: %s (%d so far; "
                "metric streamkit_dropped_records)",
                self.task_name,
                node,
                "dropped" if routed_to is None else f"wrote to {routed_to.name} instead of using",
                where,
                record.timestamp,
                reason,
                count,
            )

    async def close(self) -> None:
        self._context.run(self._close)

    def _close(self) -> None:
        for name, processor in self._processors.items():
            try:
                processor.close()
            except Exception:
                log.exception("processor %s raised while closing", name)

    def cancel(self) -> None:
        """Nothing runs outside a call from the task: nothing to cancel."""
