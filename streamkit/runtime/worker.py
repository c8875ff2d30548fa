"""The worker: one process's transport clients, coordinator, tasks and timers.

Its fetch loop is the top of a record's path: transport -> coordinator (which task
owns the partition) -> the task's bounded queue. Everything below runs in the
task's coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import StreamkitError
from ..state.sqlite_store import read_checkpoint, store_path
from ..topology import TaskId, Topology
from ..transport import transport_for
from ..transport.base import Consumer, Producer, RawRecord, TopicPartition
from .assignor import MemberInfo, TaskPlanner
from .coordinator import Coordinator
from .failures import FailureRouter
from .gc_tuning import gc_tuned
from .global_tables import GlobalTables
from .liveness import LoopWatchdog, watch_progress
from .record_writer import RecordWriter
from .status import StatusReporter, status_topic
from .task import Task, TaskServices
from .topic_admin import ensure_topics

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("streamkit.worker")


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

    def stop(self) -> None:
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
        app = self.app
        transport = transport_for(
            self.settings.broker,
            self.settings.transport_options(),
            read_committed=self.settings.exactly_once,
        )
        admin = transport.admin()
        try:
            await ensure_topics(admin, app.all_topics())
            # Changelogs are sized by the tasks, known once source counts are settled.
            self.topology = topology = app.topology()
            await ensure_topics(admin, [*topology.internal_topics(), self._status_topic])
        finally:
            await admin.close()
        planner = TaskPlanner(
            topology,
            self._member_info,
            standby_replicas=self.settings.num_standby_replicas,
            acceptable_recovery_lag=self.settings.acceptable_recovery_lag,
        )
        producer = transport.producer()
        consumer = transport.consumer(app.id, planner)
        await producer.start()
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
        app._attach(self)
        metrics_server = (
            None
            if self.settings.metrics_port is None
            else app.metrics.serve(self.settings.metrics_port)
        )
        self.global_tables = GlobalTables(app.global_tables.values(), services)
        try:
            # Whole before the group is joined: no task sees a half-loaded global table.
            if not await self.global_tables.load(cancelled=self._stopping.is_set):
                return  # stopped while loading: the group never saw this worker
            self.global_tables.start_tailing(self._fail)
            await consumer.start(topology.source_topics(), self.coordinator)
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
                processing_guarantee=self.settings.processing_guarantee,
            )
            self._background.append(asyncio.create_task(self.status.run(), name="status"))
            self._background.append(
                asyncio.create_task(
                    watch_progress(self._tasks, self.settings.progress_warning_s),
                    name="progress watchdog",
                )
            )
            await self._fetch_until_stopped(consumer)
        finally:
            await self._shut_down(consumer, producer)
            app._detach(self)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        if self._failure is not None:
            raise self._failure

    def _tasks(self) -> list[Task]:
        return [] if self.coordinator is None else list(self.coordinator.tasks.values())

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
        return MemberInfo(
            active=frozenset(self._owned_tasks()),
            standby=frozenset(coordinator.standbys if coordinator else ()),
            offsets=offsets,
            rack=self.settings.rack,
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
        if fetched:
            return now
        if (
            self._stop_when_idle_s is not None
            and now - last_record_at >= self._stop_when_idle_s
            and not coordinator.has_queued_records()
        ):
            log.info("no new records for %.1f s: stopping", self._stop_when_idle_s)
            self._stopping.set()
        return last_record_at

    async def _shut_down(self, consumer: Consumer, producer: Producer) -> None:
        for timer in self._background:
            timer.cancel()
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout_s):
                if self.coordinator is not None:
                    await self.coordinator.close_all()
                if self.status is not None:
                    self.status.retire()
                await producer.flush()
        except TimeoutError:
            log.error(
                "shutdown took longer than %.0f s; records not yet committed will be "
                "processed again on restart",
                self.settings.shutdown_timeout_s,
            )
            if self.coordinator is not None:
                self.coordinator.cancel_all()
        except StreamkitError as exc:
            self._fail(exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            if self.global_tables is not None:
                with contextlib.suppress(Exception):
                    await self.global_tables.stop()
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _run_timer(
        self, name: str, interval_s: float, fn: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except Exception:
                log.exception("timer %s raised; it runs again in %.1f s", name, interval_s)


def run_worker(app: App, *, stop_when_idle_s: float | None = None) -> None:
    """Run a worker in this process until SIGINT/SIGTERM; raise what stopped it otherwise."""
    import signal

    async def main() -> None:
        worker = Worker(app, stop_when_idle_s=stop_when_idle_s)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    if app.settings.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
