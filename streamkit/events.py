"""What an agent sees of one input record, after deserialization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .transport.base import Headers


@dataclass(slots=True, frozen=True)
class Event:
    key: Any
    value: Any
    headers: Headers
    timestamp: int
    topic: str
    partition: int
    offset: int
