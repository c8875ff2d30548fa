"""Fixtures for tests that need a real Kafka-protocol broker.

One broker serves the whole session: starting Tansu is cheap, but each test's
topics and groups are not shared, and a shared broker keeps the session close
to how users run (one cluster, many apps). Set `STREAMKIT_TEST_BROKER` to
`kafka://host:port` (or plain `host:port`) to run the same tests against
another broker, such as a real Kafka or Redpanda.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from streamkit.devbroker import DevBroker

BROKER_ENV = "STREAMKIT_TEST_BROKER"

_counter = itertools.count()
# Topics and groups outlive a test on an external broker: a per-session tag
# keeps one run's names from meeting the previous run's offsets.
_session_tag = uuid.uuid4().hex[:8]


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test or run uses (Kafka's legal characters only)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:150] or "t"
    return f"{clean}-{_session_tag}-{next(_counter)}"


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """`kafka://host:port` of the session's broker."""
    external = os.environ.get(BROKER_ENV, "").strip()
    if external:
        yield external if "://" in external else f"kafka://{external}"
        return
    with DevBroker() as broker:
        yield broker.url


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Makes names unique to this test: `topic_name("clicks")` -> `test_x-clicks-<tag>-7`."""
    test = request.node.name

    def make(suffix: str = "t") -> str:
        return unique_name(f"{test}-{suffix}")

    return make


__all__ = ["BROKER_ENV", "kafka_url", "topic_name", "unique_name"]
