"""The `streamkit` console script, driven as a real subprocess.

Apps come from `examples/` (cwd = the repository root) or from `tests/apps/`
(cwd = that folder, which `load_app` puts on sys.path). Every wait has a deadline;
nothing sleeps for a fixed time.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
STREAMKIT = Path(sys.executable).parent / "streamkit"
COUNT_LINE = re.compile(r"^(\w+) has viewed (\d+) pages$")


def _env() -> dict[str, str]:
    """The caller's environment without STREAMKIT_* overrides, and no .pyc litter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _command(args: Sequence[str], *, python_m: bool = False) -> list[str]:
    if STREAMKIT.exists() and not python_m:
        return [str(STREAMKIT), *args]
    return [sys.executable, "-m", "streamkit", *args]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float = 30.0,
    python_m: bool = False,
    stdin: str = "",
    env: dict[str, str] | None = None,
) -> Result:
    """Run `streamkit ARGS` to completion (or fail the test at the deadline)."""
    try:
        done = subprocess.run(
            _command(args, python_m=python_m),
            cwd=cwd,
            env={**_env(), **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"streamkit {' '.join(args)} did not exit within {timeout} s\n"
            f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}"
        ) from None
    return Result(done.returncode, done.stdout, done.stderr)


class LiveProcess:
    """A running `streamkit` process whose output lines can be awaited with a deadline."""

    def __init__(self, args: Sequence[str], *, cwd: Path) -> None:
        self.popen = subprocess.Popen(
            _command(args),
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, pipe: IO[str], sink: list[str]) -> None:
        for line in pipe:
            sink.append(line)
            self._lines.put(line)

    def output(self) -> str:
        return f"--- stdout\n{''.join(self.stdout)}\n--- stderr\n{''.join(self.stderr)}"

    def wait_for_line(self, pattern: str, timeout: float = 15.0) -> str:
        """The first line (on stdout or stderr) from now on that matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s\n{self.output()}"
                )
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self._lines.empty():
                    for reader in self._readers:
                        reader.join(timeout=5)
                    if self._lines.empty():
                        raise AssertionError(
                            f"process exited ({self.popen.returncode}) before printing a "
                            f"line matching {pattern!r}\n{self.output()}"
                        ) from None
                continue
            if regex.search(line):
                return line

    def wait(self, timeout: float) -> int:
        """Exit code, or fail the test if the process is still running at the deadline."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process did not exit within {timeout} s\n{self.output()}"
            ) from None
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@pytest.fixture
def live() -> Iterator[list[LiveProcess]]:
    """Processes started by a test; killed (by their own pid) if the test left them running."""
    started: list[LiveProcess] = []
    yield started
    for process in started:
        process.kill()


def assert_one_line_error(result: Result) -> str:
    """Exit code 1, a single `error: ...` line on stderr, no traceback anywhere."""
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    assert result.stderr.startswith("error: "), str(result)
    assert result.stderr.strip().count("\n") == 0, f"more than one line on stderr\n{result}"
    return result.stderr.strip()


# The example app ------------------------------------------------------------


def run_click_count(data_dir: Path, *extra: str) -> Result:
    """`streamkit worker examples.click_count:app --stop-when-idle 2`, from the repo root."""
    args = ["worker", "examples.click_count:app", "--stop-when-idle", "2"]
    result = run_cli([*args, "--data-dir", str(data_dir), *extra], cwd=ROOT, timeout=40)
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def assert_counts_add_up(result: Result) -> None:
    """Every user's counts are 1, 2, ..., n, and the last ones add up to the 100 clicks."""
    counts: dict[str, list[int]] = defaultdict(list)
    for line in result.stdout.splitlines():
        match = COUNT_LINE.match(line)
        assert match, f"unexpected output line {line!r}\n{result}"
        counts[match[1]].append(int(match[2]))
    assert set(counts) <= {"ada", "grace", "linus", "margaret", "ken"}, str(result)
    # Each user's counts arrive on one partition, in order, exactly once.
    for user, seen in counts.items():
        assert seen == list(range(1, len(seen) + 1)), f"{user}: {seen}"
    # 5 rounds of 20 clicks.
    assert sum(seen[-1] for seen in counts.values()) == 100, str(result)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_click_count_example_runs_to_completion(loop: str, tmp_path: Path) -> None:
    result = run_click_count(tmp_path / "state", "--loop", loop)
    assert_counts_add_up(result)

    banner = result.stderr
    assert "app=clicks" in banner
    assert "broker=memory://" in banner
    assert f"loop={loop}" in banner
    assert "agent count_views: clicks -> views-per-user" in banner
    assert "agent show: views-per-user -> -" in banner
    assert "timer make_clicks: every 0.5 s" in banner
    assert "sub-topology 0 tasks: 0_0 0_1 0_2 0_3" in banner
    assert "sub-topology 1 tasks: 1_0 1_1 1_2 1_3" in banner
    assert "no new records for 2.0 s: stopping" in banner
    assert banner.rstrip().endswith("worker stopped cleanly"), str(result)


def test_click_count_rerun_does_not_inherit_stale_state(tmp_path: Path) -> None:
    """The memory broker starts empty each run, so state left in the data dir by the last
    run is ahead of its (new, empty) changelog and must not carry counts over."""
    data_dir = tmp_path / "state"
    assert_counts_add_up(run_click_count(data_dir))
    assert any(data_dir.iterdir()), "the first run left no state behind"
    second = run_click_count(data_dir)
    assert_counts_add_up(second)
    # Expected on memory://, so not worth a warning (it alarmed first-time users).
    assert " WARNING " not in second.stderr, str(second)


def test_topology_describes_the_example() -> None:
    result = run_cli(["topology", "examples.click_count:app"], cwd=ROOT)
    assert result.returncode == 0, str(result)
    assert result.stderr == "", str(result)
    out = result.stdout
    for expected in [
        "Topologies:",
        "Sub-topology: 0 (tasks: 0_0, 0_1, 0_2, 0_3)",
        "Source: source-clicks (topic: clicks, partitions: 4)",
        "Processor: count_views (agent",
        "--> sink-views-per-user",
        "<-- source-clicks",
        "Sink: sink-views-per-user (topic: views-per-user)",
        "<-- count_views",
        "Sub-topology: 1 (tasks: 1_0, 1_1, 1_2, 1_3)",
        "Source: source-views-per-user (topic: views-per-user, partitions: 4)",
        "Processor: show (agent",
        "<-- source-views-per-user",
    ]:
        assert expected in out, f"{expected!r} missing from\n{out}"
    # Sub-topology 0 comes first and holds count_views; 1 holds show.
    first, second = out.split("Sub-topology: 1")
    assert "count_views" in first and "Processor: show" not in first
    assert "Processor: show" in second and "Processor: count_views" not in second


def test_version_through_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamkit", "--version"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done
    assert done.stdout.strip() == "streamkit, version 0.1.0"


# One-line errors --------------------------------------------------------------


@pytest.mark.parametrize("python_m", [False, True], ids=["script", "python-m"])
@pytest.mark.parametrize("command", ["worker", "topology"])
def test_module_that_does_not_exist(command: str, python_m: bool) -> None:
    result = run_cli([command, "sk_no_such_module:app"], cwd=APPS, python_m=python_m)
    message = assert_one_line_error(result)
    assert message == "error: cannot import module 'sk_no_such_module': no such module"


def test_submodule_that_does_not_exist() -> None:
    message = assert_one_line_error(run_cli(["worker", "examples.nope:app"], cwd=ROOT))
    assert "'examples.nope'" in message and "no such module" in message


@pytest.mark.parametrize("command", ["worker", "topology"])
def test_missing_attribute_is_named(command: str) -> None:
    message = assert_one_line_error(run_cli([command, "examples.click_count:nope"], cwd=ROOT))
    assert "'nope'" in message
    assert "'examples.click_count'" in message
    assert "it has app" in message  # a hint at the App the module does have


def test_reference_without_attribute() -> None:
    message = assert_one_line_error(run_cli(["worker", "examples.click_count"], cwd=ROOT))
    assert "MODULE:ATTRIBUTE" in message


@pytest.mark.parametrize(
    ("attribute", "kind"),
    [
        ("answer", "int"),
        ("names", "list"),
        ("make_nothing", "NoneType"),  # a factory that returns no App
        ("Click", "Click"),
        ("make_app_badly", "RuntimeError"),
        ("start", "function"),
    ],
)
def test_attribute_that_is_not_an_app(attribute: str, kind: str) -> None:
    message = assert_one_line_error(run_cli(["worker", f"sk_not_apps:{attribute}"], cwd=APPS))
    assert f"sk_not_apps:{attribute}" in message
    assert kind in message


@pytest.mark.parametrize("broker", ["bogus://x", "localhost:9092"])
def test_unknown_broker_scheme(broker: str, tmp_path: Path) -> None:
    result = run_cli(
        ["worker", "examples.click_count:app", "--broker", broker, "--data-dir", str(tmp_path)],
        cwd=ROOT,
    )
    message = assert_one_line_error(result)
    assert f"unknown broker {broker!r}" in message
    assert "memory://" in message and "kafka://" in message
    assert "app=" not in result.stderr  # refused before the banner, before anything runs


@pytest.mark.parametrize("python_m", [False, True], ids=["script", "python-m"])
def test_module_that_raises_at_import(python_m: bool) -> None:
    result = run_cli(["worker", "sk_import_error:app"], cwd=APPS, python_m=python_m)
    message = assert_one_line_error(result)
    source = (APPS / "sk_import_error.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if text.startswith("raise RuntimeError"))
    assert "RuntimeError: configuration file clicks.toml is missing" in message
    assert f"sk_import_error.py:{line}" in message


def test_module_whose_dependency_is_missing() -> None:
    message = assert_one_line_error(run_cli(["worker", "sk_missing_dependency:app"], cwd=APPS))
    assert "ModuleNotFoundError" in message
    assert "sk_no_such_dependency" in message
    assert "sk_missing_dependency.py:3" in message


def test_missing_dependency_whose_name_prefixes_the_module() -> None:
    message = assert_one_line_error(run_cli(["worker", "sk_clicks_v2:app"], cwd=APPS))
    assert "sk_clicks'" in message or "sk_clicks " in message
    assert "no such module" not in message


# Stopping ---------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_busy_worker_cleanly(
    sig: signal.Signals, loop: str, live: list[LiveProcess], tmp_path: Path
) -> None:
    process = LiveProcess(
        ["worker", "sk_ticker:app", "--loop", loop, "--data-dir", str(tmp_path)], cwd=APPS
    )
    live.append(process)
    # Records are flowing through the agent: the handlers are installed by now.
    process.wait_for_line(r"^tick \d+ for k\d$")
    process.wait_for_line(r"^tick \d+ for k\d$")
    process.popen.send_signal(sig)
    code = process.wait(timeout=10)
    assert code == 0, process.output()
    stderr = "".join(process.stderr)
    assert "worker stopped cleanly" in stderr, process.output()
    assert "Traceback" not in stderr, process.output()
    assert f"loop={loop}" in stderr


def test_agent_failure_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    result = run_cli(["worker", "sk_failing_agent:app", "--data-dir", str(tmp_path)], cwd=APPS)
    assert result.returncode != 0, str(result)
    # Records before the failing one were handled, none after it.
    assert result.stdout.splitlines() == [f"handled {n}" for n in range(5)], str(result)
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "error: agent explode failed on numbers[0]@5: ValueError: cannot handle 5"
    # And how to move on: the agent's policy, or skipping the record.
    # On memory:// (this app's broker) there is no committed offset to reset past it.
    assert lines[-1].startswith("hint: the worker stops at such a record (on_error='fail')")
    assert "on_error='skip' or on_error='dead_letter' on the agent explode" in lines[-1]
    assert "no committed offset to move past it" in lines[-1]
    assert "streamkit reset" not in lines[-1]
    assert "worker stopped cleanly" not in result.stderr
    # The user's own traceback is shown, ending in their raise.
    assert "sk_failing_agent.py" in result.stderr
    assert "ValueError: cannot handle 5" in result.stderr


def test_bad_input_under_fail_policy_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    result = run_cli(["worker", "sk_bad_record:app", "--data-dir", str(tmp_path)], cwd=APPS)
    assert result.returncode == 1, str(result)
    assert result.stdout.splitlines() == ["order tea x1", "order jam x2"], str(result)
    assert "Traceback" not in result.stderr, str(result)
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: value deserialization failed on orders[0]@2: "), str(result)
    assert "Invalid JSON" in error
    assert "on_error='skip' or on_error='dead_letter' on app.topic('orders', ...)" in hint
    assert "a memory:// broker keeps records and offsets only while its process runs" in hint


def test_banner_lists_stream_graphs_and_does_not_guess_broker_partition_counts() -> None:
    import streamkit as sk
    from streamkit.cli import _banner

    app = sk.App("banner")
    declared = app.topic("declared", key_type=str, value_type=str, partitions=2)
    adopted = app.topic("adopted", key_type=str, value_type=str)  # the broker's count
    app.stream(declared).filter(lambda k, v: True).to(adopted)
    app.stream(adopted).foreach(lambda k, v: None)
    banner = _banner(app)
    assert "stream graph KSTREAM-SOURCE-0000000000: declared (3 nodes)" in banner
    assert "sub-topology 0 tasks: 0_0 0_1" in banner
    assert "sub-topology 1 tasks: one per partition of its widest source" in banner


def test_the_click_count_example_runs_exactly_once_from_the_command_line(tmp_path: Path) -> None:
    """`--processing-guarantee exactly_once`: the banner says so with the 100 ms commit
    interval, and the example's counts still come out 1..n once each."""
    result = run_click_count(tmp_path, "--processing-guarantee", "exactly_once")
    assert "guarantee=exactly_once  commit every 0.1 s" in result.stderr, str(result)
    assert_counts_add_up(result)


def test_exactly_once_commits_every_100_ms_unless_the_interval_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamkit as sk

    assert sk.App("a").settings.commit_interval_s == 1.0
    eos = sk.App("b", processing_guarantee="exactly_once")
    assert eos.settings.commit_interval_s == 0.1
    eos.configure(processing_guarantee="at_least_once")  # the default follows the guarantee
    assert eos.settings.commit_interval_s == 1.0
    chosen = sk.App("c", processing_guarantee="exactly_once", commit_interval_s=2)
    assert chosen.settings.commit_interval_s == 2.0
    monkeypatch.setenv("STREAMKIT_PROCESSING_GUARANTEE", "exactly_once")
    from_env = sk.App("d")
    assert from_env.settings.exactly_once and from_env.settings.commit_interval_s == 0.1


# streamkit send ---------------------------------------------------------------------

CLICKS = "examples.click_count:app"
NOWHERE = "kafka://127.0.0.1:1"  # records are checked before any connection


async def test_send_puts_json_lines_on_the_topic_typed_by_its_declaration(
    kafka_url: str, topic_name: Callable[[str], str]
) -> None:
    from cluster import partition_of, read_topic

    topic = topic_name("clicks")
    lines = (
        '{"key": "ada", "value": {"user": "ada", "page": "/"}}\n'
        "\n"
        '{"key": "grace", "value": {"user": "grace", "page": "/docs"}, "timestamp_ms": 5}\n'
    )
    send = ["send", "sk_send_target:app", topic, "--broker", kafka_url]
    sent = run_cli(send, cwd=APPS, stdin=lines, env={"SKT_TOPIC": topic})
    assert sent.returncode == 0, sent
    assert sent.stdout == f"sent 2 records to {topic} on {kafka_url}\n"
    one = run_cli(
        [*send, "--key", "ken", '{"user": "ken", "page": "/"}'], cwd=APPS, env={"SKT_TOPIC": topic}
    )
    assert one.returncode == 0, one
    records = await read_topic(kafka_url, topic, 4)
    assert {(r.key, r.value, r.partition) for r in records} == {
        (b"ada", b'{"user":"ada","page":"/"}', partition_of(b"ada", 4)),
        (b"grace", b'{"user":"grace","page":"/docs"}', partition_of(b"grace", 4)),
        (b"ken", b'{"user":"ken","page":"/"}', partition_of(b"ken", 4)),
    }


def test_send_refuses_memory_where_no_other_process_would_see_the_records() -> None:
    result = run_cli(["send", CLICKS, "clicks", "--key", "ada", "{}"], cwd=ROOT)
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: the app's broker is memory://, which lives inside ")
    assert "streamkit dev-broker" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (
            ["clicks"],
            '{"key": "ada", "value": {"user": "ada", "page": "/"}}\n'
            '{"key": "bob", "value": {"user": "bob"}}\n',
            'error: line 2: value {"user": "bob"} does not fit topic \'clicks\': '
            "1 validation error for Click",
        ),
        (["clicks"], "ada\n", "error: line 1: not JSON"),
        (["clicks"], '{"user": "ada"}\n', 'error: line 1: expected {"key": ..., "value": ...}'),
        (["clicks", "--key", "ada"], "not json\n", 'error: line 1: value "not json" does not fit'),
        (["click"], "", "error: app 'clicks' declares no topic 'click' (it has: clicks, "),
    ],
)
def test_send_says_which_line_does_not_fit_and_sends_nothing(
    args: list[str], stdin: str, error: str
) -> None:
    result = run_cli(["send", CLICKS, *args, "--broker", NOWHERE], cwd=ROOT, stdin=stdin)
    assert result.returncode == 1, result
    assert result.stderr.startswith(error), result
    assert len(result.stderr.splitlines()) == 1, result


# settings from the environment ---------------------------------------------------------


def test_the_examples_take_their_broker_from_the_environment() -> None:
    # They name no broker in code: STREAMKIT_BROKER reaches them, with nothing said.
    result = run_cli(
        ["topology", "examples.word_count:app"],
        cwd=ROOT,
        env={"STREAMKIT_BROKER": "kafka://127.0.0.1:9092"},
    )
    assert result.returncode == 0, result
    assert "ignored" not in result.stderr, result


@pytest.mark.parametrize(
    ("env", "code", "said"),
    [
        (  # a misspelled variable, named with the closest setting; tools' own are not
            {"STREAMKIT_COMIT_INTERVAL_S": "3", "STREAMKIT_TEST_ANYTHING": "tools' own"},
            0,
            "STREAMKIT_COMIT_INTERVAL_S is not a streamkit setting and is ignored; did you "
            "mean STREAMKIT_COMMIT_INTERVAL_S?",
        ),
        (  # a variable the app's code overrides
            {"STREAMKIT_BROKER": "kafka://127.0.0.1:9092"},
            0,
            "STREAMKIT_BROKER=kafka://127.0.0.1:9092 is ignored: the app's code sets "
            "broker='memory://' in sk.App(...), which wins over the environment (the "
            "worker's command-line options win over both)",
        ),
        (  # bad JSON, in one line
            {"STREAMKIT_KAFKA_OPTIONS": "{session_timeout_ms: 6000}"},
            1,
            "error: STREAMKIT_KAFKA_OPTIONS is not valid JSON (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)): give an object, like "
            """STREAMKIT_KAFKA_OPTIONS='{"session_timeout_ms": 6000}'""",
        ),
    ],
)
def test_environment_variables_that_are_not_read_are_said_in_one_line(
    env: dict[str, str], code: int, said: str
) -> None:
    # sk_ticker's code names its broker, as the examples once did.
    result = run_cli(["topology", "sk_ticker:app"], cwd=APPS, env=env)
    assert result.returncode == code, result
    assert result.stderr.splitlines() == [said]
