"""Routes a record that could not be processed by its policy, so none vanishes.

Under `fail` the caller gets an error naming topic, partition, offset and reason;
under `skip` the record is logged and counted; under `dead_letter` its raw bytes
go to `{app_id}-dlq` with the reason and origin in headers, and are counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from ..errors import AgentError, BadInputError, RecordError
from ..metrics import Metrics
from ..serde import problems
from ..topic import ErrorPolicy, Topic
from ..transport.base import RawRecord
from .record_writer import RecordWriter

log = logging.getLogger("streamkit.failures")

HEADER_PREFIX = "streamkit.error."


def describe(exc: BaseException) -> str:
    """One line a user can act on, even for pydantic's multi-line reports."""
    if isinstance(exc, ValidationError):
        text = f"{exc.title} validation failed: {problems(exc)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."


class FailureRouter:
    def __init__(self, dead_letter: Topic | None, writer: RecordWriter, metrics: Metrics) -> None:
        self._dead_letter = dead_letter
        self._writer = writer
        self._metrics = metrics

    def with_writer(self, writer: RecordWriter) -> FailureRouter:
        """The same policies writing dead letters through another writer: a task's
        transactional one, so a dead letter commits or aborts with its record."""
        return FailureRouter(self._dead_letter, writer, self._metrics)

    def bad_input(
        self, record: RawRecord, exc: BaseException, stage: str, policy: ErrorPolicy
    ) -> None:
        """A key or value failed to deserialize or validate."""
        self._metrics.bad_records.labels(record.topic, policy.value).inc()
        self._route(record, exc, stage, policy, BadInputError)

    def agent_failed(
        self, agent: str, record: RawRecord, exc: BaseException, policy: ErrorPolicy
    ) -> None:
        """A user's agent raised while a record was in hand."""
        self._metrics.agent_errors.labels(agent, policy.value).inc()
        self._route(record, exc, f"agent {agent}", policy, AgentError)

    def agent_failed_batch(
        self,
        agent: str,
        records: Sequence[RawRecord],
        exc: BaseException,
        policy: ErrorPolicy,
    ) -> None:
        """A `stream.batches()` agent raised with a batch in hand: which record caused
        it is unknown, so the policy takes every record of the batch, with one log
        line for all of them (a fail names the batch's first record)."""
        self._metrics.agent_errors.labels(agent, policy.value).inc(len(records))
        stage = f"agent {agent} (a batch of {len(records)})"
        for record in records:
            self._route(record, exc, stage, policy, AgentError, quiet=True)
        first, last = records[0], records[-1]
        log.warning(
            "%s %d records %s[%d]@%d..%d: agent %s failed on their batch: %s",
            "skipped" if policy is ErrorPolicy.SKIP else "sent to the dead-letter topic",
            len(records),
            first.topic,
            first.partition,
            first.offset,
            last.offset,
            agent,
            describe(exc),
        )

    def _route(
        self,
        record: RawRecord,
        exc: BaseException,
        stage: str,
        policy: ErrorPolicy,
        error: type[RecordError],
        quiet: bool = False,
    ) -> None:
        reason = describe(exc)
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if policy is ErrorPolicy.FAIL:
            raise error(
                reason,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                stage=stage,
            ) from exc
        if policy is ErrorPolicy.SKIP:
            self._metrics.skipped_records.labels(record.topic).inc()
            if not quiet:
                log.warning("skipped %s: %s failed: %s", where, stage, reason)
            return
        assert self._dead_letter is not None, "dead_letter policy without a dead-letter topic"
        headers = [
            *record.headers,
            (HEADER_PREFIX + "stage", stage.encode()),
            (HEADER_PREFIX + "reason", reason.encode()),
            (HEADER_PREFIX + "topic", record.topic.encode()),
            (HEADER_PREFIX + "partition", str(record.partition).encode()),
            (HEADER_PREFIX + "offset", str(record.offset).encode()),
        ]
        self._writer.write_raw(
            self._dead_letter, record.key, record.value, headers, record.timestamp
        )
        self._metrics.dead_lettered_records.labels(record.topic).inc()
        if quiet:
            return
        log.warning(
            "sent %s to dead-letter topic %s: %s failed: %s",
            where,
            self._dead_letter.name,
            stage,
            reason,
        )
