"""An agent: a user's async function bound to source and sink topics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .topic import ErrorPolicy, Topic

AgentFn = Callable[..., Any]


@dataclass(eq=False)
class Agent:
    name: str
    fn: AgentFn
    sources: tuple[Topic, ...]
    sinks: tuple[Topic, ...]
    on_error: ErrorPolicy

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError(f"agent {self.name!r} has no source topic")
        yields = inspect.isasyncgenfunction(self.fn)
        if not yields and not inspect.iscoroutinefunction(self.fn):
            raise ConfigError(
                f"agent {self.name!r} must be an `async def` function taking the stream"
            )
        if yields and not self.sinks:
            raise ConfigError(
                f"agent {self.name!r} yields records but has no sink: pass sink=<topic>"
            )
        if self.sinks and not yields:
            raise ConfigError(
                f"agent {self.name!r} has a sink but never yields: make it an async "
                "generator (`yield key, value`) or drop sink="
            )

    @property
    def yields(self) -> bool:
        return bool(self.sinks)

    def __repr__(self) -> str:
        sources = ", ".join(t.name for t in self.sources)
        sinks = ", ".join(t.name for t in self.sinks)
        return f"<Agent {self.name}: {sources} -> {sinks or '(no sink)'}>"


@dataclass(eq=False)
class Timer:
    """Periodic work on every worker, e.g. generating input or flushing aggregates."""

    name: str
    interval_s: float
    fn: Callable[[], Any]
