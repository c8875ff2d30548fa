"""The Processor API: the nodes DSL operators compile to, open to users for the rest.

A processor is instantiated once per task. It sees one record at a time through
`process`, forwards records to its children through its context, reaches the
task's stores by name, and schedules punctuations on stream time or wall-clock
time (seed 001: routing to a topic chosen per record, processing at fixed
intervals). Everything runs inside the task's coroutine, synchronously: a
processor needs no locks and must not block.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .transport.base import Headers

if TYPE_CHECKING:
    from .state.table import Table


@dataclass(slots=True)
class Record:
    """A record between processors: key, value, event timestamp (ms) and headers."""

    key: Any
    value: Any
    timestamp: int
    headers: Headers = ()

    def with_key(self, key: Any) -> Record:
        return Record(key, self.value, self.timestamp, self.headers)

    def with_value(self, value: Any) -> Record:
        return Record(self.key, value, self.timestamp, self.headers)

    def with_timestamp(self, timestamp: int) -> Record:
        return Record(self.key, self.value, timestamp, self.headers)

    def replace(self, **changes: Any) -> Record:
        return dataclasses.replace(self, **changes)


class PunctuationType(StrEnum):
    """What drives a scheduled callback (Kafka Streams' PunctuationType)."""

    STREAM_TIME = "stream_time"  # the task's largest record timestamp: moves with input
    WALL_CLOCK = "wall_clock"  # the system clock: fires even when no input arrives


STREAM_TIME = PunctuationType.STREAM_TIME
WALL_CLOCK = PunctuationType.WALL_CLOCK


class Cancellable(abc.ABC):
    @abc.abstractmethod
    def cancel(self) -> None: ...


class ProcessorContext(abc.ABC):
    """What a processor may do besides computing: forward, reach stores, schedule, commit."""

    @property
    @abc.abstractmethod
    def app_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def task_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def partition(self) -> int:
        """The task's partition number (task `<sub>_<partition>`)."""

    @property
    @abc.abstractmethod
    def topic(self) -> str | None:
        """The input topic of the record in hand; None inside a punctuation."""

    @property
    @abc.abstractmethod
    def offset(self) -> int | None:
        """The input offset of the record in hand; None inside a punctuation."""

    @property
    @abc.abstractmethod
    def stream_time_ms(self) -> int | None:
        """The largest record timestamp this task has seen."""

    @property
    @abc.abstractmethod
    def wall_clock_ms(self) -> int: ...

    @abc.abstractmethod
    def forward(self, record: Record, to: str | None = None) -> None:
        """Pass a record to every child, or to the child named `to`."""

    @abc.abstractmethod
    def store(self, name: str) -> Table:
        """The task's shard of a store this processor was connected to (`stores=[...]`)."""

    @abc.abstractmethod
    def schedule(
        self,
        interval_s: float,
        kind: PunctuationType,
        callback: Callable[[int], None],
    ) -> Cancellable:
        """Call `callback(timestamp_ms)` every `interval_s` of stream or wall-clock time."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Ask for a commit once the record in hand is done (outputs and stores first)."""


class Processor:
    """Subclass and override `process`; `init` keeps the context as `self.context`."""

    context: ProcessorContext

    def init(self, context: ProcessorContext) -> None:
        self.context = context

    def process(self, record: Record) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement process(record)")

    def close(self) -> None:
        """Called when the task closes (rebalance or shutdown), after its last commit."""


ProcessorFactory = Callable[[], Processor]
