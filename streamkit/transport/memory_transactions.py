"""Kafka's transaction rules for `memory://`, the one broker here that can prove them.

The brokers at hand accept transactions but return aborted records to
`read_committed` readers (DESIGN.md), so exactly-once is proven against this
model. Each rule is Kafka's:

- A transactional id is bound to one producer id; `InitProducerId` bumps its epoch
  and aborts the transaction an older epoch left open. Every later request of an
  older epoch is fenced (`ProducerFenced`).
- A transaction's records are appended at once, like any others, and are invisible
  to `read_committed` readers until a commit marker follows them; an abort marker
  hides them for good. Markers take an offset each and are never returned.
- The last stable offset (LSO) of a partition is the first offset of its oldest open
  transaction: a `read_committed` reader stops there, even before committed records
  of other producers that come after it.
- Offsets sent to a transaction become the group's committed offsets only when the
  transaction commits.
- A transaction left open longer than its timeout is aborted by the broker, and the
  epoch is bumped, so the producer that hung is fenced when it comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import ProducerFenced, TransportError
from .base import TopicPartition


class TxnState(StrEnum):
    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(eq=False)
class Transaction:
    """One transaction of one producer epoch; its records point at it."""

    transactional_id: str
    producer_id: int
    epoch: int
    started: float
    state: TxnState = TxnState.OPEN
    # First offset this transaction wrote in each partition: what holds the LSO back.
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # group id -> next offsets to commit with the transaction.
    offsets: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)


@dataclass
class _Producer:
    producer_id: int
    epoch: int
    timeout_ms: int
    open: Transaction | None = None


class TransactionLog:
    """The transaction coordinator of a memory broker.

    `write_marker(tp, txn)` appends a control record to a partition and
    `commit_offsets(group, offsets)` stores a group's offsets: the broker's own
    operations, so that this class holds the rules and the broker the logs.
    """

    def __init__(
        self,
        write_marker: Callable[[TopicPartition, Transaction], None],
        commit_offsets: Callable[[str, Mapping[TopicPartition, int]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write_marker = write_marker
        self._commit_offsets = commit_offsets
        self.clock = clock
        self._producers: dict[str, _Producer] = {}
        self._next_producer_id = 1000
        # Open transactions per partition (first offset each): the LSO's source.
        self._open: dict[TopicPartition, dict[Transaction, int]] = {}
        # Partitions that ever held a transactional record: the others read fast.
        self.transactional: set[TopicPartition] = set()

    def init_producer(self, transactional_id: str, timeout_ms: int) -> tuple[int, int]:
        """Register (or re-register) a transactional id: (producer id, new epoch)."""
        self.expire()
        producer = self._producers.get(transactional_id)
        if producer is None:
            producer = _Producer(self._next_producer_id, -1, timeout_ms)
            self._next_producer_id += 1
            self._producers[transactional_id] = producer
        if producer.open is not None:
            self._end(producer, TxnState.ABORTED)
        producer.epoch += 1
        producer.timeout_ms = timeout_ms
        return producer.producer_id, producer.epoch

    def epoch(self, transactional_id: str) -> int | None:
        producer = self._producers.get(transactional_id)
        return None if producer is None else producer.epoch

    def _current(self, transactional_id: str, epoch: int) -> _Producer:
        self.expire()
        producer = self._producers.get(transactional_id)
        if producer is None:
            raise TransportError(f"transactional id {transactional_id!r} was never initialised")
        if epoch != producer.epoch:
            raise ProducerFenced(
                f"transactional id {transactional_id!r}: epoch {epoch} was fenced by epoch "
                f"{producer.epoch} (a newer producer took the id, or the broker aborted a "
                "transaction that outlived its timeout)"
            )
        return producer

    def transaction_for_write(
        self, transactional_id: str, epoch: int, tp: TopicPartition, offset: int
    ) -> Transaction:
        """The open transaction a record at `offset` joins (begun here if none is open)."""
        producer = self._current(transactional_id, epoch)
        txn = self._begin(producer, transactional_id)
        if tp not in txn.first_offsets:
            txn.first_offsets[tp] = offset
            self._open.setdefault(tp, {})[txn] = offset
            self.transactional.add(tp)
        return txn

    def _begin(self, producer: _Producer, transactional_id: str) -> Transaction:
        if producer.open is None:
            producer.open = Transaction(
                transactional_id, producer.producer_id, producer.epoch, self.clock()
            )
        return producer.open

    def check(self, transactional_id: str, epoch: int) -> None:
        """Raise ProducerFenced unless `epoch` is still the id's current one."""
        self._current(transactional_id, epoch)

    def add_offsets(
        self,
        transactional_id: str,
        epoch: int,
        group_id: str,
        offsets: Mapping[TopicPartition, int],
    ) -> None:
        producer = self._current(transactional_id, epoch)
        txn = self._begin(producer, transactional_id)
        txn.offsets.setdefault(group_id, {}).update(offsets)

    def commit(self, transactional_id: str, epoch: int) -> None:
        producer = self._current(transactional_id, epoch)
        if producer.open is not None:
            self._end(producer, TxnState.COMMITTED)

    def abort(self, transactional_id: str, epoch: int) -> None:
        producer = self._current(transactional_id, epoch)
        if producer.open is not None:
            self._end(producer, TxnState.ABORTED)

    def _end(self, producer: _Producer, state: TxnState) -> None:
        txn = producer.open
        assert txn is not None
        producer.open = None
        txn.state = state
        for tp in txn.first_offsets:
            self._write_marker(tp, txn)
            opened = self._open[tp]
            del opened[txn]
            if not opened:
                del self._open[tp]
        if state is TxnState.COMMITTED:
            for group_id, offsets in txn.offsets.items():
                self._commit_offsets(group_id, offsets)

    def expire(self) -> None:
        """Abort transactions older than their timeout, fencing their producers."""
        now = self.clock()
        for producer in self._producers.values():
            txn = producer.open
            if txn is not None and (now - txn.started) * 1000 > producer.timeout_ms:
                self._end(producer, TxnState.ABORTED)
                producer.epoch += 1

    def last_stable_offset(self, tp: TopicPartition, end: int) -> int:
        opened = self._open.get(tp)
        return min(opened.values()) if opened else end
