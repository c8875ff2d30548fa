"""What an agent sees of one input record, after deserialization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .transport.base import Headers


class StreamTime:
    """A task's stream time: the largest record timestamp handed to its agents so far.

    Shared by the task's streams (which advance it) and stores (whose windows
    expire by it), as Kafka Streams keeps stream time per task.
    """

    __slots__ = ("ms",)

    def __init__(self) -> None:
        self.ms: int | None = None


@dataclass(slots=True)
class Event:
    """Not frozen: a frozen dataclass's __init__ costs a call per field on the hot path."""

    key: Any
    value: Any
    headers: Headers
    timestamp: int
    topic: str
    partition: int
    offset: int
