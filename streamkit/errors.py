"""Errors a user sees. Each carries a message that names the thing to fix."""

from __future__ import annotations


class StreamkitError(Exception):
    """Base of every error streamkit raises on purpose."""


class ConfigError(StreamkitError):
    """A setting, broker URL or app reference is wrong; raised before anything runs."""


class TopologyError(StreamkitError):
    """The graph cannot run as declared (co-partitioning, partition counts, wiring)."""


class TransportError(StreamkitError):
    """The broker refused or failed an operation."""


class StateError(StreamkitError):
    """A table was used where it cannot be (outside its task, a key of another partition)."""


class CommitRejected(TransportError):
    """The group refused a commit because it rebalanced: the partitions may have moved.

    Not fatal: the records since the last commit are processed again by whichever
    worker owns the partitions next (at-least-once).
    """


class ProducerFenced(TransportError):
    """A newer producer took this transactional id: the task moved to another worker.

    Fatal for the task that holds the fenced producer (its uncommitted work belongs
    to the new owner now), never for the worker: it closes that task and goes on.
    """


class TransactionAborted(TransportError):
    """A transaction could not commit and was aborted; the task resumes from its
    committed offsets with its uncommitted state dropped."""


class SerdeError(StreamkitError):
    """A key or value could not be turned into bytes or back."""


class RecordError(StreamkitError):
    """Processing one input record failed; names where the record lives."""

    def __init__(self, reason: str, *, topic: str, partition: int, offset: int, stage: str) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.stage = stage
        super().__init__(f"{stage} failed on {topic}[{partition}]@{offset}: {reason}")


class BadInputError(RecordError):
    """A record's key or value failed to deserialize or validate, under the `fail` policy."""


class AgentError(RecordError):
    """A user's agent raised while processing a record, under the `fail` policy."""


class QueryError(StreamkitError):
    """An interactive query (`app.query`, `/tables`, `/sql`) could not be answered."""

    # The HTTP status the web server answers it with.
    status = 400


class BadQuery(QueryError):
    """The query itself is wrong: a key that does not parse, a statement that is not
    a SELECT, an unknown parameter. Asking again will not help."""


class UnknownTable(QueryError):
    """No table of that name is served by this app."""

    status = 404


class NotAvailable(QueryError):
    """The state that answers the query is not readable now: its task is restoring,
    a rebalance is moving it, or its worker did not answer. Ask again after
    `retry_after_s`."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
