"""The worker: one process's transport clients, coordinator, tasks and timers.

Its fetch loop is the top of a record's path: transport -> coordinator (which task
owns the partition) -> the task's bounded queue. Everything below runs in the
task's coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError, StreamkitError, TransportError
from ..state.sqlite_store import read_checkpoint, store_path
from ..topology import TaskId, Topology
from ..transport import transport_for
from ..transport.base import Consumer, Producer, RawRecord, TopicPartition, Transport
from ..web.routing import Queries
from ..web.server import WebServer
from .assignor import MemberInfo, TaskPlanner
from .broker_health import BrokerWatch, RepeatFilter, probe
from .coordinator import Coordinator
from .failures import FailureRouter
from .gc_tuning import gc_tuned
from .global_tables import GlobalTables
from .live_readings import WorkerReadings
from .liveness import LoopWatchdog, watch_progress
from .queries import LocalState, targets
from .record_writer import RecordWriter
from .standby import StandbyTask
from .status import StatusReporter, status_topic
from .task import Task, TaskServices
from .topic_admin import ensure_topics
from .warmups import probe_when_warm

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("streamkit.worker")

# Exit statuses of `streamkit worker` (README, "Stopping a worker").
EXIT_FAILED = 1  # a failure stopped it: a record under `fail`, a broker error, a bad setting
EXIT_SHUTDOWN_TIMED_OUT = 3  # stopped, but not all in-hand work was committed in time

# The producer's flush and each client close get at least this long, even after
# the tasks used up the budget: leaving the group at once spares the others a
# session timeout.
CLOSE_FLOOR_S = 1.0
# How long a cancelled shutdown step may take to unwind before it is left behind.
UNWIND_S = 0.25
# The most a shutdown runs past `shutdown_timeout_s`: the tasks' unwind, the flush and
# three client closes at their floors, and the cancelling of leftovers.
SHUTDOWN_OVERRUN_S = UNWIND_S + 4 * (CLOSE_FLOOR_S + UNWIND_S) + CLOSE_FLOOR_S
# Beyond that, how long the last-resort watchdog gives the event loop before it ends
# the process itself.
HARD_EXIT_GRACE_S = 5.0


class ShutdownTimedOut(StreamkitError):
    """The worker stopped, but some of its shutdown did not finish within the timeout."""


class Worker:
    """Runs an app until `stop()`, a signal, or a failure under the `fail` policy."""

    def __init__(self, app: App, *, stop_when_idle_s: float | None = None) -> None:
        self.app = app
        self.settings = app.settings
        self._stop_when_idle_s = stop_when_idle_s
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._background: list[asyncio.Task[None]] = []
        self.writer: RecordWriter | None = None
        self.coordinator: Coordinator | None = None
        self.topology: Topology | None = None
        self.watchdog: LoopWatchdog | None = None
        self._status_topic = status_topic(app.id)
        self.status: StatusReporter | None = None
        self.global_tables: GlobalTables | None = None
        # Interactive queries: `app.query` and the web server's routes go through it.
        self.queries: Queries | None = None
        self._stop_requested_at: float | None = None
        self._broker_watch: BrokerWatch | None = None
        # What a shutdown did not finish in time, said in the worker's last line.
        self.shutdown_shortfall: list[str] = []

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the worker to stop: safe at any moment, from start-up to shutdown.

        Every phase of `_run` races this request, so a stop never waits for a
        start-up step, a group join or a fetch to finish first.
        """
        if self._stopping.is_set():
            log.info("%s: already stopping", reason)
            return
        self._stop_requested_at = asyncio.get_running_loop().time()
        log.info(
            "%s: stopping (finishing the batches in hand and committing, at most %.0f s)",
            reason,
            self.settings.shutdown_timeout_s,
        )
        self._stopping.set()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._stopping.set()

    async def run(self) -> None:
        """Start, fetch until stopped, shut down; raise the failure that stopped it, if any."""
        with gc_tuned(self.settings.gc_young_threshold):
            await self._run()

    async def _run(self) -> None:
        transport = transport_for(
            self.settings.broker,
            self.settings.transport_options(),
            read_committed=self.settings.exactly_once,
        )
        with self._watching_the_broker():
            # A stop during start-up gives up the step in progress: the group never saw us.
            if not await self._unless_stopped("asking the broker", self._check_broker()):
                return
            if not await self._unless_stopped("creating topics", self._prepare_topics(transport)):
                return
            await self._run_on(transport)

    @contextlib.contextmanager
    def _watching_the_broker(self) -> Iterator[None]:
        """On kafka://, say when the broker goes and comes back, and rate-limit
        aiokafka's repeated errors on the way (runtime/broker_health.py)."""
        if not self.settings.broker.startswith("kafka://"):
            yield
            return
        from ..transport.kafka import parse_kafka_url

        servers = parse_kafka_url(self.settings.broker)
        watch = BrokerWatch(servers, ",".join(servers))
        limiter = RepeatFilter(on_lost=watch.lost)
        handlers = list(logging.getLogger().handlers)
        for handler in handlers:
            handler.addFilter(limiter)
        watch.start()
        self._broker_watch = watch
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(limiter)
            watch.cancel()

    async def _check_broker(self) -> None:
        """Fail in words, within seconds, when no bootstrap server speaks Kafka."""
        if not self.settings.broker.startswith("kafka://"):
            return
        if str(self.settings.kafka_options.get("security_protocol", "PLAINTEXT")).endswith("SSL"):
            return  # the probe speaks plaintext; TLS brokers are checked by the clients
        from ..transport.kafka import parse_kafka_url

        servers = parse_kafka_url(self.settings.broker)
        problems = [p for p in await asyncio.gather(*(probe(s) for s in servers)) if p]
        if len(problems) == len(servers):
            raise TransportError(f"broker {self.settings.broker}: " + "; ".join(problems))

    async def _run_on(self, transport: Transport) -> None:
        app = self.app
        topology = self.topology
        assert topology is not None
        planner = TaskPlanner(
            topology,
            self._member_info,
            standby_replicas=self.settings.num_standby_replicas,
            acceptable_recovery_lag=self.settings.acceptable_recovery_lag,
            max_warmup_replicas=self.settings.max_warmup_replicas,
        )
        producer = transport.producer()
        consumer = transport.consumer(app.id, planner)
        if not await self._unless_stopped("connecting the producer", producer.start()):
            return
        producer.on_delivery_failure = app.metrics.producer_failed
        self.writer = writer = RecordWriter(producer)
        services = TaskServices(
            transport=transport,
            consumer=consumer,
            writer=writer,
            failures=FailureRouter(app.dead_letter_topic_if_used(), writer, app.metrics),
            metrics=app.metrics,
            settings=self.settings,
            state_dir=self.settings.data_dir / app.id,
            app_id=app.id,
            restore_listener=app.restore_listener,
        )
        self.coordinator = Coordinator(
            topology, services, self._fail, lambda: planner.assigned.standby
        )
        local = LocalState(
            targets(topology, app.global_tables.values()),
            self.coordinator,
            lambda: planner.assigned,
        )
        self.queries = Queries(local, None, self.settings.web_forward_timeout_s)
        app._attach(self)
        readings = WorkerReadings(consumer, self._tasks, self._standbys, lambda: self.watchdog)
        app.metrics.live.readings = readings
        metrics_server = (
            None
            if self.settings.metrics_port is None
            else app.metrics.serve(self.settings.metrics_port)
        )
        self.global_tables = GlobalTables(app.global_tables.values(), services)
        consumer_started = False
        web_server = None
        try:
            if self.settings.web_port is not None:
                # Before the group is joined: the endpoint goes into the join metadata.
                web_server = WebServer(app, self.queries, local)
                self.queries.endpoint = await _listening(web_server, self.settings.web_port)
            # Whole before the group is joined: no task sees a half-loaded global table.
            if not await self.global_tables.load(cancelled=self._stopping.is_set):
                return  # stopped while loading: the group never saw this worker
            self.global_tables.start_tailing(self._fail)
            self.coordinator.joining()
            consumer_started = await self._unless_stopped(
                f"joining group {app.id!r}",
                consumer.start(topology.source_topics(), self.coordinator),
            )
            if not consumer_started:
                return
            log.info("joining group %r for topics %s", app.id, ", ".join(topology.source_topics()))
            self.watchdog = LoopWatchdog(app.agents, self.settings.loop_stall_warning_s)
            self._background = [
                asyncio.create_task(self._run_timer(t.name, t.interval_s, t.fn), name=t.name)
                for t in app.timers
            ]
            self._background.append(asyncio.create_task(self.watchdog.run(), name="loop watchdog"))
            self.status = StatusReporter(
                self._status_topic,
                writer,
                self._owned_tasks,
                interval_s=self.settings.status_interval_s,
                processing_guarantee=self.settings.processing_guarantee,
                web=self.queries.endpoint if self.queries is not None else None,
            )
            self._background.append(asyncio.create_task(self.status.run(), name="status"))
            self._background.append(
                asyncio.create_task(
                    probe_when_warm(
                        lambda: planner.assigned,
                        self.coordinator.lags,
                        consumer.request_rejoin,
                        acceptable_lag=self.settings.acceptable_recovery_lag,
                        interval_s=self.settings.probing_rebalance_interval_s,
                    ),
                    name="warm-up probe",
                )
            )
            self._background.append(
                asyncio.create_task(
                    watch_progress(self._tasks, self.settings.progress_warning_s),
                    name="progress watchdog",
                )
            )
            await self._fetch_until_stopped(consumer)
        finally:
            await self._shut_down(consumer if consumer_started else None, producer)
            app._detach(self)
            await self.queries.close()
            if web_server is not None:
                await web_server.stop()
            if app.metrics.live.readings is readings:
                app.metrics.live.readings = None
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        if self._failure is not None:
            raise self._failure
        if self.shutdown_shortfall:
            raise ShutdownTimedOut(
                f"shutdown took longer than {self.settings.shutdown_timeout_s:g} s: "
                + "; ".join(self.shutdown_shortfall)
            )

    async def _prepare_topics(self, transport: Transport) -> None:
        """Create the app's topics, then its internal ones, sized by the settled tasks."""
        admin = transport.admin()
        try:
            await ensure_topics(admin, self.app.all_topics())
            # Changelogs are sized by the tasks, known once source counts are settled.
            self.topology = topology = self.app.topology()
            await ensure_topics(admin, [*topology.internal_topics(), self._status_topic])
        finally:
            if not await self._within(admin.close(), CLOSE_FLOOR_S):
                log.debug("closing the admin client did not finish: left behind")

    async def _unless_stopped(self, what: str, step: Awaitable[object]) -> bool:
        """Await a start-up step; give it up as soon as a stop is requested.

        True when the step finished (the next step sees the stop, if one came),
        False when it was given up. Its errors propagate, also when they come with
        the stop: a step that fails within UNWIND_S of the stop fails the worker.
        """
        job = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((job, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not job.done():
            # A step about to end (a check, an in-process call) may still fail: its
            # failure, not the stop, is what the user needs to hear.
            await asyncio.wait((job,), timeout=UNWIND_S)
        if job.done():
            job.result()
            return True
        log.info("stopped while %s: giving it up", what)
        job.cancel()
        done, _ = await asyncio.wait((job,), timeout=UNWIND_S)
        if not done:
            self.shutdown_shortfall.append(f"{what} did not unwind")
        return False

    def _tasks(self) -> list[Task]:
        return [] if self.coordinator is None else list(self.coordinator.tasks.values())

    def _standbys(self) -> list[StandbyTask]:
        return [] if self.coordinator is None else list(self.coordinator.standbys.values())

    def _owned_tasks(self) -> list[TaskId]:
        return [] if self.coordinator is None else self.coordinator.owned_tasks()

    def _member_info(self) -> MemberInfo:
        """What this worker tells the group leader: its tasks and how current its state is."""
        assert self.topology is not None
        state_dir = self.settings.data_dir / self.app.id
        offsets = {}
        for sub in self.topology.subtopologies:
            for task in sub.task_ids():
                checkpoints = [
                    read_checkpoint(store_path(state_dir, task, t.name)) for t in sub.tables
                ]
                if any(c is not None for c in checkpoints):
                    offsets[task] = sum(c or 0 for c in checkpoints)
        coordinator = self.coordinator
        host = socket.gethostname()
        return MemberInfo(
            active=frozenset(self._owned_tasks()),
            standby=frozenset(coordinator.standbys if coordinator else ()),
            offsets=offsets,
            rack=self.settings.rack,
            name=f"{host}:{os.getpid()}",
            state_dir=f"{host}:{state_dir.resolve()}",
            lags=coordinator.lags() if coordinator else {},
            endpoint=self.queries.endpoint if self.queries is not None else None,
        )

    async def _fetch_until_stopped(self, consumer: Consumer) -> None:
        max_records = self.settings.max_poll_records
        last_record_at = asyncio.get_running_loop().time()
        # A stop must not wait for a fetch's timeout: race every fetch against it.
        stop_requested = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.ensure_future(
                    consumer.getmany(timeout_s=0.5, max_records=max_records)
                )
                await asyncio.wait((fetch, stop_requested), return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()  # nothing fetched is lost: offsets move only on commit
                    break
                last_record_at = self._route(fetch.result(), consumer, last_record_at)
        finally:
            stop_requested.cancel()

    def _route(
        self,
        fetched: Mapping[TopicPartition, Sequence[RawRecord]],
        consumer: Consumer,
        last_record_at: float,
    ) -> float:
        """Hand fetched records to their tasks; returns when records last arrived."""
        assert self.coordinator is not None
        coordinator = self.coordinator
        now = asyncio.get_running_loop().time()
        for tp, records in fetched.items():
            task = coordinator.task_for(tp)
            if task is None:
                # No task for it (yet): fetch these again rather than lose them.
                log.debug("no task for %s[%d] yet: seeking back", tp.topic, tp.partition)
                consumer.seek(tp, records[0].offset)
            elif task.enqueue(tp, records):
                consumer.pause(tp)
        if fetched or (not coordinator.tasks and self.topology and self.topology.subtopologies):
            return now  # idle time counts once the worker owns tasks, not during the join
        if (
            self._stop_when_idle_s is not None
            and now - last_record_at >= self._stop_when_idle_s
            and not coordinator.has_queued_records()
        ):
            log.info("no new records for %.1f s: stopping", self._stop_when_idle_s)
            self._stopping.set()
        return last_record_at

    async def _shut_down(self, consumer: Consumer | None, producer: Producer) -> None:
        """Stop within `shutdown_timeout_s` of the stop request, whatever the worker was doing.

        1. Stop the timers and watchdogs: nothing new starts.
        2. Close the tasks: each finishes its batch in hand, flushes its outputs and
           commits. The coordinator takes no assignment from here on, so a rebalance
           that completes during the shutdown (the consumer finishes a join it began)
           starts no task. At the deadline the tasks still closing are cancelled:
           their records since their last commit are processed again by the next owner.
        3. Retire this worker's status and flush the producer, within the same deadline
           (at least CLOSE_FLOOR_S).
        4. Leave the group (stop the consumer), stop the global tables' reader, stop
           the producer: each within what is left of the budget, and at least
           CLOSE_FLOOR_S, so that the group hears of the leave even after a slow step 2.
        A step cut off at its deadline gets UNWIND_S to unwind and is then left behind,
        so the whole runs at most SHUTDOWN_OVERRUN_S past the timeout.
        What did not finish is listed in `shutdown_shortfall`; `_run` then raises
        ShutdownTimedOut (exit status 3), unless a failure stopped the worker.
        """
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at or loop.time()
        deadline = started + self.settings.shutdown_timeout_s

        def left() -> float:
            return deadline - loop.time()

        # 1. Timers and watchdogs.
        for timer in self._background:
            timer.cancel()
        coordinator = self.coordinator
        try:
            # 2. Tasks: finish, flush, commit; cancelled at the deadline.
            if coordinator is not None:
                unfinished: list[str] = []

                def note_unfinished() -> None:
                    unfinished.extend(coordinator.unfinished())

                closed = await self._within(
                    coordinator.close_all(), left(), on_timeout=note_unfinished
                )
                if not closed:
                    self.shutdown_shortfall.append(
                        f"tasks {' '.join(unfinished) or '?'} did not commit their last "
                        "records (the next owner processes them again)"
                    )
            # 3. Status tombstone and the producer's last records.
            if self.status is not None:
                self.status.retire()
            if not await self._within(producer.flush(), max(left(), CLOSE_FLOOR_S)):
                self.shutdown_shortfall.append("the producer's last records were not sent")
        except StreamkitError as exc:
            self._fail(exc)
        finally:
            # 4. Clients, each bounded; a failure to close is not the user's problem.
            steps: list[tuple[str, Awaitable[object], bool]] = []
            if consumer is not None:
                # A worker still joining holds nothing: it need not wait for the join
                # the broker holds (seconds on Tansu) to end before it leaves.
                joining = coordinator is None or not coordinator.assignments
                steps.append(("leaving the group", consumer.stop(), joining))
            if self.global_tables is not None:
                steps.append(("stopping the global tables", self.global_tables.stop(), False))
            steps.append(("stopping the producer", producer.stop(), False))
            for what, step, may_give_up in steps:
                budget = CLOSE_FLOOR_S if may_give_up else max(left(), CLOSE_FLOOR_S)
                try:
                    if await self._within(step, budget):
                        continue
                    if may_give_up:
                        log.info("%s: gave up the group join in progress", what)
                    else:
                        self.shutdown_shortfall.append(f"{what} did not finish")
                except Exception:
                    log.debug("%s raised", what, exc_info=True)
        if self.shutdown_shortfall:
            watch = self._broker_watch
            why = ""
            if watch is not None and watch.unreachable_since is not None:
                since = time.strftime("%H:%M:%S", time.localtime(watch.unreachable_since))
                why = f" (the broker has been unreachable since {since})"
            log.error(
                "shutdown took longer than %.0f s%s: %s; records not yet committed will be "
                "processed again on restart",
                self.settings.shutdown_timeout_s,
                why,
                "; ".join(self.shutdown_shortfall),
            )

    async def _within(
        self,
        step: Awaitable[object],
        budget_s: float,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> bool:
        """Await `step` for at most `budget_s`; at the deadline call `on_timeout`, then
        cancel it and give it UNWIND_S to unwind, after which it is left behind
        rather than waited for: nothing in a shutdown waits without a bound.
        True when it finished in time; its exception propagates."""
        job = asyncio.ensure_future(step)
        done, _ = await asyncio.wait((job,), timeout=max(0.0, budget_s))
        if job in done:
            if job.cancelled():
                # aiokafka lets the CancelledError of an inner task it awaited escape.
                log.debug("%r ended cancelled", step)
                return False
            job.result()
            return True
        on_timeout()
        job.cancel()
        await asyncio.wait((job,), timeout=UNWIND_S)
        return False

    async def _run_timer(
        self, name: str, interval_s: float, fn: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except Exception:
                log.exception("timer %s raised; it runs again in %.1f s", name, interval_s)


async def _listening(server: WebServer, port: int) -> str:
    """Start the web server; a port that is taken is the user's to fix, in one line."""
    try:
        return await server.start()
    except OSError as exc:
        raise ConfigError(f"web_port {port}: cannot listen ({exc.strerror or exc})") from None


def run_worker(app: App, *, stop_when_idle_s: float | None = None) -> None:
    """Run a worker in this process until SIGINT/SIGTERM; raise what stopped it otherwise.

    The process ends within `shutdown_timeout_s` (plus the clients' closes) of a
    signal, whatever the worker was doing: the shutdown bounds each of its steps,
    tasks left running after it are cancelled, and a last-resort watchdog thread
    ends the process (exit status 3, after printing where it was stuck) if the
    event loop itself does not get there, say because user code blocks it.
    """
    import signal

    shutdown_budget = app.settings.shutdown_timeout_s + SHUTDOWN_OVERRUN_S

    async def main() -> None:
        worker = Worker(app, stop_when_idle_s=stop_when_idle_s)
        loop = asyncio.get_running_loop()
        watchdogs: list[threading.Timer] = []

        def on_signal(signum: int, _frame: object) -> None:
            # A plain handler, not loop.add_signal_handler: it runs even while user
            # code blocks the loop, so the watchdog starts whatever the loop does.
            name = signal.Signals(signum).name
            if not watchdogs:
                watchdogs.append(
                    _start_hard_exit_watchdog(loop, shutdown_budget + HARD_EXIT_GRACE_S, name)
                )
            loop.call_soon_threadsafe(worker.stop, f"received {name}")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            await worker.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            await _cancel_leftovers()

    if app.settings.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def _cancel_leftovers() -> None:
    """Cancel what outlived the worker, briefly waiting for it; name what will not end.

    asyncio.run() would wait for every leftover without a bound before returning.
    """
    me = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not me]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return
    _, pending = await asyncio.wait(leftovers, timeout=CLOSE_FLOOR_S)
    if pending:
        log.error(
            "still running after the shutdown, left behind: %s",
            "; ".join(_where(t) for t in pending),
        )
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_TIMED_OUT)


def _where(task: asyncio.Task[object]) -> str:
    frames = task.get_stack(limit=3)
    at = " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in frames)
    return f"{task.get_name()} at {at or '?'}"


def _start_hard_exit_watchdog(
    loop: asyncio.AbstractEventLoop, after_s: float, signal_name: str
) -> threading.Timer:
    """After `after_s`, end the process from a thread if the loop has not ended it.

    The last bound on a shutdown: it holds even when the event loop is blocked.
    It prints the stacks of every thread and asyncio task first, so that a hang
    leaves its cause behind instead of a silent kill.
    """
    began = time.monotonic()

    def fire() -> None:
        import faulthandler

        sys.stderr.write(
            f"streamkit: the worker did not stop within {time.monotonic() - began:.0f} s of "
            f"{signal_name}: exiting now (status {EXIT_SHUTDOWN_TIMED_OUT}); records not yet "
            "committed will be processed again on restart. Where it was stuck:\n"
        )
        with contextlib.suppress(Exception):
            for task in list(asyncio.all_tasks(loop)):
                sys.stderr.write(f"  task {_where(task)}\n")
        with contextlib.suppress(Exception):
            faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_SHUTDOWN_TIMED_OUT)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.start()
    return timer
