"""Session-wide fixtures: one in-process broker per test, one Kafka broker per session.

The Kafka-protocol broker (Tansu) lives here, in conftest.py, and nowhere else: a
session-scoped fixture imported into a test module is a new fixture of that module,
which is how seven modules once started seven brokers. Set `STREAMKIT_TEST_BROKER`
to `kafka://host:port` (or plain `host:port`) to run the same tests against another
broker, such as a real Kafka or Redpanda. Under pytest-xdist (`make test` runs `-n 2`)
the controller starts the one broker and sets that variable for its workers. Tests
that freeze or stop a broker start one of their own.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster

from streamkit import MemoryBroker
from streamkit.devbroker import DevBroker

BROKER_ENV = "STREAMKIT_TEST_BROKER"

_names = itertools.count()
_counter = itertools.count()
# Topics and groups outlive a test on an external broker: a per-session tag
# keeps one run's names from meeting the previous run's offsets.
_session_tag = uuid.uuid4().hex[:8]


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh named in-process broker per test."""
    name = f"test{next(_names)}"
    yield f"memory://{name}"
    MemoryBroker.reset(name)


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test or run uses (Kafka's legal characters only)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:150] or "t"
    return f"{clean}-{_session_tag}-{next(_counter)}"


def tansu_children() -> list[int]:
    """Pids of the Tansu processes this pytest process started (read from /proc)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith("tansu"):
            found.append(int(entry.name))
    return found


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`), the controller starts the run's one broker and its
    workers share it through the environment they inherit."""
    distributed = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not distributed or os.environ.get(BROKER_ENV):
        return
    broker = DevBroker().start()
    config.stash[_SHARED_BROKER] = broker
    os.environ[BROKER_ENV] = broker.url


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = config.stash.get(_SHARED_BROKER, None)
    if broker is not None:
        os.environ.pop(BROKER_ENV, None)
        broker.stop()


_SHARED_BROKER = pytest.StashKey[DevBroker]()


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """`kafka://host:port` of the session's one broker."""
    external = os.environ.get(BROKER_ENV, "").strip()
    if external:
        yield external if "://" in external else f"kafka://{external}"
        return
    assert not tansu_children(), "a Tansu broker of this session is already running"
    with DevBroker() as broker:
        yield broker.url
        # Nobody started a second one behind this fixture's back.
        running = tansu_children()
        assert len(running) == 1, f"{len(running)} Tansu brokers in one session: {running}"


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Makes names unique to this test: `topic_name("clicks")` -> `test_x-clicks-<tag>-7`."""
    test = request.node.name

    def make(suffix: str = "t") -> str:
        return unique_name(f"{test}-{suffix}")

    return make


@pytest.fixture
def cluster(kafka_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """A Cluster whose leftover workers are killed (by their own pids) after the test."""
    c = Cluster(kafka_url, tmp_path)
    try:
        yield c
    finally:
        c.kill_all()
