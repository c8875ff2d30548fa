"""An agent: a user's async function bound to source and sink topics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from .errors import ConfigError
from .state.table import Table
from .topic import ErrorPolicy, Topic

AgentFn = Callable[..., Any]


@dataclass(eq=False)
class Agent:
    name: str
    fn: AgentFn
    sources: tuple[Topic, ...]
    sinks: tuple[Topic, ...]
    on_error: ErrorPolicy
    # The tables whose shards this agent's tasks hold; see `tables_used_by`.
    tables: tuple[Table, ...] = field(default=())

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


def tables_used_by(fn: Callable[..., Any]) -> list[Table]:
    """Tables the function's code names, as globals or closure variables.

    This binds `counts` in `async def f(stream): ... counts[k] += 1` to the agent
    without ceremony; tables reached in other ways are passed as `tables=[...]`.
    """
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    names: set[str] = set()
    pending: list[CodeType] = [code]
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending.extend(c for c in current.co_consts if isinstance(c, CodeType))
    found = [v for n in sorted(names) if isinstance(v := fn.__globals__.get(n), Table)]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, Table):
            found.append(value)
    return list(dict.fromkeys(found))


@dataclass(eq=False)
class Timer:
    """Periodic work on every worker, e.g. generating input or flushing aggregates."""

    name: str
    interval_s: float
    fn: Callable[[], Any]
