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
from collections.abc import Iterator, Sequence
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


def _command(args: Sequence[str]) -> list[str]:
    if STREAMKIT.exists():
        return [str(STREAMKIT), *args]
    return [sys.executable, "-m", "streamkit", *args]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(args: Sequence[str], *, cwd: Path, timeout: float = 30.0) -> Result:
    """Run `streamkit ARGS` to completion (or fail the test at the deadline)."""
    try:
        done = subprocess.run(
            _command(args),
            cwd=cwd,
            env=_env(),
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
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr, result
    assert result.stderr.startswith("error: "), result
    assert result.stderr.strip().count("\n") == 0, f"more than one line on stderr\n{result}"
    return result.stderr.strip()


# The example app ------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_click_count_example_runs_to_completion(loop: str, tmp_path: Path) -> None:
    result = run_cli(
        [
            "worker",
            "examples.click_count:app",
            "--stop-when-idle",
            "2",
            "--loop",
            loop,
            "--data-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        timeout=40,
    )
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result

    counts: dict[str, list[int]] = defaultdict(list)
    for line in result.stdout.splitlines():
        match = COUNT_LINE.match(line)
        assert match, f"unexpected output line {line!r}\n{result}"
        counts[match[1]].append(int(match[2]))
    assert set(counts) <= {"ada", "grace", "linus", "margaret", "ken"}, result
    # Each user's counts arrive on one partition, in order, exactly once: 1, 2, ..., n.
    for user, seen in counts.items():
        assert seen == list(range(1, len(seen) + 1)), f"{user}: {seen}"
    # 5 rounds of 20 clicks.
    assert sum(seen[-1] for seen in counts.values()) == 100, result

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
    assert banner.rstrip().endswith("worker stopped cleanly"), result


def test_topology_describes_the_example() -> None:
    result = run_cli(["topology", "examples.click_count:app"], cwd=ROOT)
    assert result.returncode == 0, result
    assert result.stderr == "", result
    out = result.stdout
    for expected in [
        "Topologies:",
        "Sub-topology: 0 (tasks: 0_0, 0_1, 0_2, 0_3)",
        "Source: source-clicks (topic: clicks, partitions: 4)",
        "Processor: count_views (agent)",
        "--> sink-views-per-user",
        "<-- source-clicks",
        "Sink: sink-views-per-user (topic: views-per-user)",
        "<-- count_views",
        "Sub-topology: 1 (tasks: 1_0, 1_1, 1_2, 1_3)",
        "Source: source-views-per-user (topic: views-per-user, partitions: 4)",
        "Processor: show (agent)",
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


@pytest.mark.parametrize("command", ["worker", "topology"])
def test_module_that_does_not_exist(command: str) -> None:
    message = assert_one_line_error(run_cli([command, "sk_no_such_module:app"], cwd=APPS))
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
        pytest.param(
            "Click",
            "Click",
            marks=pytest.mark.xfail(
                strict=True,
                reason="load_app calls any callable attribute as an App factory; a class "
                "that is not an App (here a pydantic model) raises ValidationError, which "
                "escapes as a traceback",
            ),
        ),
        pytest.param(
            "make_app_badly",
            "RuntimeError",
            marks=pytest.mark.xfail(
                strict=True,
                reason="an App factory that raises escapes load_app as a traceback instead "
                "of a one-line error naming the exception",
            ),
        ),
        pytest.param(
            "start",
            "function",
            marks=pytest.mark.xfail(
                strict=True,
                reason="load_app calls an async function, reports 'is a coroutine' and leaves "
                "a never-awaited coroutine whose RuntimeWarning adds lines to stderr",
            ),
        ),
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


def test_module_that_raises_at_import() -> None:
    message = assert_one_line_error(run_cli(["worker", "sk_import_error:app"], cwd=APPS))
    source = (APPS / "sk_import_error.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if text.startswith("raise RuntimeError"))
    assert "RuntimeError: configuration file clicks.toml is missing" in message
    assert f"sk_import_error.py:{line}" in message


def test_module_whose_dependency_is_missing() -> None:
    message = assert_one_line_error(run_cli(["worker", "sk_missing_dependency:app"], cwd=APPS))
    assert "ModuleNotFoundError" in message
    assert "sk_no_such_dependency" in message
    assert "sk_missing_dependency.py:3" in message


@pytest.mark.xfail(
    strict=True,
    reason="load_app treats a ModuleNotFoundError as 'no such module' when the missing "
    "module's name is a prefix of the app module's (module_name.startswith(exc.name)): "
    "sk_clicks_v2 exists but imports the missing sk_clicks, and the error claims "
    "sk_clicks_v2 itself does not exist",
)
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
    assert result.returncode != 0, result
    # Records before the failing one were handled, none after it.
    assert result.stdout.splitlines() == [f"handled {n}" for n in range(5)], result
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "error: agent explode failed on numbers[0]@5: ValueError: cannot handle 5"
    assert "worker stopped cleanly" not in result.stderr
    # The user's own traceback is shown, ending in their raise.
    assert "sk_failing_agent.py" in result.stderr
    assert "ValueError: cannot handle 5" in result.stderr


def test_bad_input_under_fail_policy_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    result = run_cli(["worker", "sk_bad_record:app", "--data-dir", str(tmp_path)], cwd=APPS)
    assert result.returncode == 1, result
    assert result.stdout.splitlines() == ["order tea x1", "order jam x2"], result
    assert "Traceback" not in result.stderr, result
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: value deserialization failed on orders[0]@2: "), result
    assert "Invalid JSON" in last
