"""The App: registry of topics, agents and timers; builds the Topology."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .agent import Agent, AgentFn, Timer, tables_used_by
from .app_producer import AppProducer, triples, worked_on
from .dsl.aggregate import TableSource
from .dsl.global_table import GlobalKTable
from .dsl.graph import GraphBuilder
from .dsl.kstream import KStream
from .dsl.ktable import KTable
from .dsl.old_values import SourceOldValues
from .dsl.versioned import versioned_ktable
from .errors import ConfigError, StateError
from .metrics import Metrics
from .partitioner import Partitioner, PartitionFn
from .processor import Record
from .runtime.record_writer import current_writer
from .serde import Serde
from .settings import make_settings
from .state.restore_listener import RestoreListener
from .state.table import Table
from .state.timestamped import SourceTable
from .state.windowed import WindowedTable
from .topic import ErrorPolicy, Topic
from .topology import Topology
from .transport.base import Headers

if TYPE_CHECKING:
    from .runtime.worker import Worker
    from .web.routing import Queries

F = TypeVar("F", bound=Callable[..., Any])
_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,200}$")


def _seconds(duration: float | timedelta) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def _table_name(table: Table | GlobalKTable | str) -> str:
    return table if isinstance(table, str) else table.name


def _check_name(kind: str, name: str) -> None:
    if not _LEGAL_NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not a legal Kafka name: use letters, digits, "
            "'.', '_' and '-' (at most 200 characters)"
        )


class App:
    """One streaming application; its id is the consumer group and the topic prefix."""

    def __init__(
        self,
        app_id: str,
        *,
        broker: str | None = None,
        data_dir: str | Path | None = None,
        **settings: Any,
    ) -> None:
        _check_name("app id", app_id)
        self.id = app_id
        self.settings = make_settings(broker=broker, data_dir=data_dir, **settings)
        self.topics: dict[str, Topic] = {}
        self.agents: list[Agent] = []
        self.tables: dict[str, Table] = {}
        self.global_tables: dict[str, GlobalKTable] = {}
        self.timers: list[Timer] = []
        # `@app.page(path)`: the app's own routes on the worker's web server.
        self.pages: list[tuple[str, Callable[..., Awaitable[Any]]]] = []
        self.graph = GraphBuilder(app_id)
        self.metrics = Metrics()
        self.restore_listener = RestoreListener()
        self._worker: Worker | None = None
        self._producer: AppProducer | None = None

    def __repr__(self) -> str:
        return f"<App {self.id} broker={self.settings.broker}>"

    def set_restore_listener(self, listener: RestoreListener) -> None:
        """Hear of every task store restore on this app's workers (see RestoreListener)."""
        self.restore_listener = listener

    def configure(self, **overrides: Any) -> None:
        """Override settings after construction (the CLI's --broker, --data-dir, ...)."""
        self.settings = make_settings(self.settings, **overrides)

    # Declarations ------------------------------------------------------------

    def topic(
        self,
        name: str,
        *,
        key_type: Any = str,
        value_type: Any = Any,
        partitions: int | None = None,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        on_error: ErrorPolicy | str = ErrorPolicy.FAIL,
        partitioner: str | PartitionFn = "murmur2",
    ) -> Topic:
        """Declare a topic. `partitions=None` adopts an existing topic's count.

        `partitioner` is how its producers pick a key's partition: `"murmur2"`
        (Kafka's default, Java clients, streamkit), `"crc32"` (librdkafka's default:
        confluent-kafka, kcat, Quix Streams, the Go and .NET clients) or a function
        `(key_bytes, partitions) -> partition`. streamkit writes keys with it, and
        checks with it that a table write of a key other than the record's own stays
        in the task.
        """
        _check_name("topic", name)
        if partitions is not None and partitions < 1:
            raise ConfigError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        try:
            policy = ErrorPolicy(on_error)
        except ValueError:
            raise ConfigError(
                f"topic {name!r}: on_error must be one of "
                f"{', '.join(p.value for p in ErrorPolicy)}, got {on_error!r}"
            ) from None
        topic = Topic(
            name,
            key_type=key_type,
            value_type=value_type,
            declared_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
            on_error=policy,
            partitioner=Partitioner(partitioner),
        )
        known = self.topics.get(name)
        if known is not None:
            same = (
                known.key_type,
                known.value_type,
                known.declared_partitions,
                known.partitioner,
            ) == (key_type, value_type, partitions, topic.partitioner)
            if not same:
                raise ConfigError(f"topic {name!r} is declared twice with different settings")
            return known
        self.topics[name] = topic
        return topic

    def table(
        self,
        name: str,
        *,
        key_type: Any = str,
        value_type: Any = Any,
        default: Callable[[], Any] | None = None,
        partitions: int | None = None,
        ttl: float | timedelta | None = None,
    ) -> Table:
        """A table: a SQLite store per task, backed by `{app_id}-{name}-changelog`.

        Agents that use it are bound to it (and so share a sub-topology); its
        changelog has one partition per task of that sub-topology. With `ttl`
        (seconds or a timedelta), keys not updated for that long are forgotten and
        tombstoned in the changelog, so state does not grow without bound.
        """
        self._claim_store_name(name)
        changelog = Topic(
            f"{self.id}-{name}-changelog",
            key_type=key_type,
            value_type=value_type,
            declared_partitions=partitions,
            config={"cleanup.policy": "compact"},
        )
        ttl_s = None if ttl is None else _seconds(ttl)
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"table {name!r}: ttl must be positive, got {ttl!r}")
        self.tables[name] = table = Table(name, changelog, default, ttl_s)
        return table

    def windowed_table(
        self,
        name: str,
        *,
        size: float | timedelta,
        advance: float | timedelta | None = None,
        retention: float | timedelta | None = None,
        key_type: Any = str,
        value_type: Any = Any,
        default: Callable[[], Any] | None = None,
        partitions: int | None = None,
    ) -> WindowedTable:
        """A table of values per (key, window) in event time: tumbling, or hopping with
        `advance`. Windows that ended `retention` (default: one day, at least the
        size) before the task's stream time are dropped.
        """
        self._claim_store_name(name)
        size_s, advance_s = _seconds(size), _seconds(advance if advance is not None else size)
        retention_s = _seconds(retention) if retention is not None else max(size_s, 86_400.0)
        if not 0 < advance_s <= size_s or retention_s < size_s:
            raise ConfigError(
                f"windowed table {name!r}: need 0 < advance <= size <= retention, got "
                f"size={size_s} s, advance={advance_s} s, retention={retention_s} s"
            )
        changelog = Topic(
            f"{self.id}-{name}-changelog",
            key_type=key_type,
            value_type=value_type,
            declared_partitions=partitions,
            config={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(int(retention_s * 1000) + 86_400_000),
            },
        )
        table = WindowedTable(name, changelog, size_s, advance_s, retention_s, default)
        self.tables[name] = table
        return table

    def agent(
        self,
        source: Topic | Sequence[Topic],
        *,
        sink: Topic | Sequence[Topic] | None = None,
        name: str | None = None,
        on_error: ErrorPolicy | str = ErrorPolicy.FAIL,
        tables: Sequence[Table] = (),
    ) -> Callable[[AgentFn], Agent]:
        """Run the decorated `async def f(stream)` once per task of its source topics."""
        sources = (source,) if isinstance(source, Topic) else tuple(source)
        sinks = () if sink is None else (sink,) if isinstance(sink, Topic) else tuple(sink)
        for topic in (*sources, *sinks):
            self.check_declared(topic)

        for table in tables:
            if self.tables.get(table.name) is not table:
                raise ConfigError(
                    f"table {table.name!r} was not declared with this app's app.table()"
                )

        def register(fn: AgentFn) -> Agent:
            agent = Agent(
                name=name or fn.__name__,
                fn=fn,
                sources=sources,
                sinks=sinks,
                on_error=ErrorPolicy(on_error),
                tables=tuple(
                    t
                    for t in dict.fromkeys([*tables, *tables_used_by(fn)])
                    if self.tables.get(t.name) is t
                ),
            )
            if any(a.name == agent.name for a in self.agents):
                raise ConfigError(f"two agents are named {agent.name!r}; pass name=")
            self.agents.append(agent)
            return agent

        return register

    # Streams DSL ---------------------------------------------------------------

    def stream(
        self,
        topic: Topic | Sequence[Topic],
        *,
        on_error: ErrorPolicy | str = ErrorPolicy.FAIL,
        timestamp_extractor: Callable[[Record], int] | None = None,
    ) -> KStream:
        """A KStream of every record of the topic(s); chain operators on it.

        `on_error` applies to exceptions raised by this stream's operators (bad
        input follows the topic's own policy); `timestamp_extractor(record) -> ms`
        gives event time when the record timestamp is not it.
        """
        topics = (topic,) if isinstance(topic, Topic) else tuple(topic)
        streams = [self._source(t, on_error, timestamp_extractor) for t in topics]
        merged = streams[0]
        for other in streams[1:]:
            merged = merged.merge(other)
        return merged

    def _source(
        self,
        topic: Topic,
        on_error: ErrorPolicy | str,
        timestamp_extractor: Callable[[Record], int] | None,
    ) -> KStream:
        self.check_declared(topic)
        self._check_not_global(topic)
        node = self.graph.source(topic, ErrorPolicy(on_error), timestamp_extractor)
        return KStream(self, node, topic.key_serde, topic.value_serde)

    def ktable(
        self,
        topic: Topic,
        *,
        name: str | None = None,
        on_error: ErrorPolicy | str = ErrorPolicy.FAIL,
        history_retention: float | timedelta | None = None,
    ) -> KTable:
        """The latest value per key of a topic; the topic itself is the store's changelog.

        Its store (named `name`, default the topic's name) is restored from the
        topic on a new worker, so no second topic is written. With
        `history_retention` (seconds or a timedelta) the table is versioned: it keeps
        each key's values for that long of stream time (in a changelog of its own),
        ignores out-of-order updates downstream, and a stream joins it as of each
        stream record's timestamp (Kafka Streams' versioned tables, KIP-914).
        """
        self.check_declared(topic)
        store = name or topic.name
        self._claim_store_name(store)
        self._check_not_global(topic)
        if self.graph.source_for(topic) is not None:
            raise ConfigError(f"topic {topic.name!r} is already read as a stream or table")
        source = self.graph.source(topic, ErrorPolicy(on_error), None)
        if history_retention is not None:
            return versioned_ktable(self, topic, store, source, _seconds(history_retention))
        table = SourceTable(store, topic)
        self.tables[store] = table
        node = self.graph.add(
            "KTABLE-SOURCE", lambda: TableSource(table), (source,), stores=(table,)
        )
        # A store named by the app is Kafka's `Materialized.as(name)`: its table sends
        # old values when first asked (dsl/old_values.py).
        old_values = SourceOldValues(materialized=name is not None)
        return KTable(self, node, topic.key_serde, topic.value_serde, table.get, old_values)

    def global_ktable(self, topic: Topic, *, name: str | None = None) -> GlobalKTable:
        """The latest value per key of a whole topic, copied into every worker.

        Each worker loads all partitions before its tasks start and follows the topic
        while running; streams join it at any key (`key_selector`), with no
        co-partitioning. Its store is `{data_dir}/{app_id}/global/{name}.sqlite`.
        """
        self.check_declared(topic)
        store = name or topic.name
        self._claim_store_name(store)
        if self.graph.source_for(topic) is not None:
            raise ConfigError(f"topic {topic.name!r} is already read as a stream or table")
        self.global_tables[store] = table = GlobalKTable(self, topic, store)
        return table

    def repartition_topic(
        self,
        name: str,
        key_serde: Serde[Any],
        value_serde: Serde[Any],
        partitions: int | None,
        *,
        suffix: str = "repartition",
    ) -> Topic:
        """`{app_id}-{name}-{suffix}`; sized with the topology unless `partitions` is given."""
        topic = Topic(
            f"{self.id}-{name}-{suffix}",
            key_type=key_serde,
            value_type=value_serde,
            declared_partitions=partitions,
        )
        _check_name("topic", topic.name)
        if topic.name in self.graph.repartition_topics or topic.name in self.topics:
            raise ConfigError(f"two repartition topics are named {topic.name!r}; pass name=")
        self.graph.repartition_topics[topic.name] = topic
        return topic

    def add_store(self, table: Table) -> Table:
        """Register a store an operator built itself (join buffers, subscription stores)."""
        self._claim_store_name(table.name)
        self.tables[table.name] = table
        return table

    def _check_not_global(self, topic: Topic) -> None:
        if any(g.topic is topic for g in self.global_tables.values()):
            raise ConfigError(
                f"topic {topic.name!r} is a GlobalKTable's; a topic is read as a stream, a "
                "table or a global table, not two of them"
            )

    def _claim_store_name(self, name: str) -> None:
        """Tables, KTable and GlobalKTable stores and operator stores share one namespace."""
        _check_name("table", name)
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f"table {name!r} is declared twice")

    def check_declared(self, topic: Topic) -> None:
        if self.topics.get(topic.name) is not topic:
            raise ConfigError(f"topic {topic.name!r} was not declared with this app's app.topic()")

    def timer(self, seconds: float, *, name: str | None = None) -> Callable[[F], F]:
        """Run the decorated `async def f()` every `seconds` on every worker."""
        if seconds <= 0:
            raise ConfigError(f"timer interval must be > 0 seconds, got {seconds}")

        def register(fn: F) -> F:
            self.timers.append(Timer(name or fn.__name__, seconds, fn))
            return fn

        return register

    def page(self, path: str) -> Callable[[F], F]:
        """Serve the decorated `async def f(request)` at `path` on the worker's web
        server (`web_port`), as Faust's web views: it gets the aiohttp request and
        returns an aiohttp response, or anything JSON-able (sent as JSON)."""
        if not path.startswith("/"):
            raise ConfigError(f"page path must start with '/', got {path!r}")

        def register(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise ConfigError(f"page {path!r}: {fn.__name__} must be an async def")
            self.pages.append((path, fn))
            return fn

        return register

    # Interactive queries ---------------------------------------------------------

    async def query(
        self,
        table: Table | GlobalKTable | str,
        key: Any,
        *,
        default: Any = None,
        stale_ok: bool = False,
    ) -> Any:
        """A table's value for `key` from anywhere in a running worker (timers, pages,
        other agents), read-only: read here when this worker holds the key's task,
        else asked of the worker that does (docs/querying.md). `default` when the
        table has no such key. Raises NotAvailable while the task restores or moves;
        with `stale_ok` a standby copy may answer."""
        queries = self._queries()
        target = queries.local.target(_table_name(table))
        answer = await queries.get(target, queries.key_bytes(target, key), stale_ok=stale_ok)
        return answer.value if answer.found else default

    async def query_range(
        self,
        table: Table | GlobalKTable | str,
        start: Any = None,
        end: Any = None,
        *,
        limit: int | None = None,
        stale_ok: bool = False,
    ) -> list[tuple[Any, Any]]:
        """Keys in [start, end) across every partition, in the byte order of their
        serialized form, with their values; the first `limit` if given."""
        queries = self._queries()
        target = queries.local.target(_table_name(table))
        low = None if start is None else queries.key_bytes(target, start)
        high = None if end is None else queries.key_bytes(target, end)
        return await queries.range_all(target, low, high, limit=limit, stale_ok=stale_ok)

    async def query_windows(
        self,
        table: WindowedTable | str,
        key: Any,
        time_from_ms: int = 0,
        time_to_ms: int = 2**62,
        *,
        stale_ok: bool = False,
    ) -> list[tuple[int, int, Any]]:
        """(start, end, value) of the key's windows starting in [time_from, time_to]."""
        queries = self._queries()
        target = queries.local.target(_table_name(table))
        kb = queries.key_bytes(target, key)
        answer = await queries.windows(target, kb, time_from_ms, time_to_ms, stale_ok=stale_ok)
        return list(answer.value)

    def _queries(self) -> Queries:
        if self._worker is None or self._worker.queries is None:
            raise StateError(
                f"app {self.id!r} has no running worker in this process: queries are "
                "answered by workers (use the worker's web server from elsewhere)"
            )
        return self._worker.queries

    # Derived -----------------------------------------------------------------

    def topology(self) -> Topology:
        return Topology.build(self.agents, self.graph, list(self.global_tables.values()))

    def dead_letter_topic_if_used(self) -> Topic | None:
        """`{app_id}-dlq`, declared only when some topic or agent routes records there."""
        used = (
            any(t.on_error is ErrorPolicy.DEAD_LETTER for t in self.topics.values())
            or any(a.on_error is ErrorPolicy.DEAD_LETTER for a in self.agents)
            or any(n.on_error is ErrorPolicy.DEAD_LETTER for n in self.graph.nodes)
        )
        if not used:
            return None
        name = f"{self.id}-dlq"
        return self.topics.get(name) or self.topic(name, key_type=bytes, value_type=bytes)

    def all_topics(self) -> list[Topic]:
        self.dead_letter_topic_if_used()
        return list(self.topics.values())

    # Running -----------------------------------------------------------------

    async def send(
        self,
        topic: Topic | str,
        *,
        key: Any = None,
        value: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce one record.

        Inside a running worker the record joins the worker's batches and is
        acknowledged before the input offset of the record in hand is committed;
        inside `async with app.producer()` it goes through that producer; elsewhere
        it is sent and acknowledged before this returns, over a connection of its own
        (use `app.producer()` or `send_many` for more than a few records).
        """
        await self._send(topic, [(key, value, timestamp_ms)], headers or (), partition)

    async def send_many(
        self,
        topic: Topic | str,
        records: Iterable[tuple[Any, Any] | tuple[Any, Any, int | None]],
    ) -> None:
        """Produce `(key, value)` or `(key, value, timestamp_ms)` records, in order.

        Outside a worker they go in batches over one connection and are all
        acknowledged before this returns.
        """
        await self._send(topic, triples(records))

    def producer(self) -> AppProducer:
        """A producer for code outside a worker (web handlers, scripts): one connection
        for every send of an `async with app.producer() as producer:` block, each send
        acknowledged when it returns. `app.send` in the block uses it too."""
        return AppProducer(self)

    def declared_topic(self, topic: Topic | str) -> Topic:
        """The app's topic by name (or the topic itself, checked to be the app's)."""
        if isinstance(topic, str):
            if topic not in self.topics:
                raise ConfigError(f"unknown topic {topic!r}: declare it with app.topic()")
            return self.topics[topic]
        return topic

    async def _send(
        self,
        topic: Topic | str,
        records: Sequence[tuple[Any, Any, int | None]],
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        topic = self.declared_topic(topic)
        writer = current_writer.get(None)
        if writer is None and self._worker is not None:
            writer = self._worker.writer
        if writer is not None:
            for key, value, ts in records:
                writer.write(topic, key, value, headers, ts, partition)
            return
        producer = self._producer
        if producer is not None and producer.serves(asyncio.get_running_loop()):
            await producer.send_records(topic, records, headers, partition)
            return
        async with self.producer() as producer:
            await producer.send_records(topic, records, headers, partition)

    def stop(self) -> None:
        """Ask the running worker to stop gracefully (from an agent or timer, say)."""
        if self._worker is not None:
            self._worker.stop()

    def _attach(self, worker: Worker) -> None:
        if self._worker is not None:
            raise ConfigError(f"app {self.id!r} already has a worker running in this process")
        self._worker = worker
        worked_on(self.settings.broker)

    def _detach(self, worker: Worker) -> None:
        if self._worker is worker:
            self._worker = None
