from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from streamkit import MemoryBroker

_names = itertools.count()


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh named in-process broker per test."""
    name = f"test{next(_names)}"
    yield f"memory://{name}"
    MemoryBroker.reset(name)
