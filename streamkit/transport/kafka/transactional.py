"""The transactional producer: exactly-once's producer, one per task.

It is the batch producer with a transactional id. aiokafka's batch API works
inside transactions (`send_batch` adds the partition to the transaction, as
`send` does, and batches built by a transactional producer carry the
transactional flag), so the transactional producer keeps the batch producer's
throughput instead of one `send()` per record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping

from aiokafka import AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import InvalidProducerEpoch, KafkaError
from aiokafka.errors import ProducerFenced as KafkaProducerFenced
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from ...errors import ProducerFenced, TransactionAborted, TransportError
from ..base import TopicPartition, TransactionalProducer
from .options import KafkaOptions, _describe
from .producer import KafkaProducer
from .txn_wire import know_producer_fenced_code, negotiate_init_producer_id

log = logging.getLogger(__name__)

# What aiokafka raises, or fails a delivery with, when a newer producer holds the id.
_FENCING = (KafkaProducerFenced, InvalidProducerEpoch)
# What a step of a commit or an abort fails with. AssertionError: aiokafka guards its
# transaction states with asserts (e.g. ending a transaction after a fatal error).
_TXN_ERRORS = (KafkaError, TransportError, OSError, AssertionError)


def _fencing_in(exc: BaseException) -> BaseException | None:
    """The fencing error `exc` is or was caused by, if any."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        if isinstance(seen, _FENCING):
            return seen
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _retrieve_fatal_error(client: object) -> None:
    """Mark aiokafka's own records of a fencing as seen.

    aiokafka sets its fatal error on futures that only a pending commit or delivery
    would await (its transaction manager's, and each unsent batch's drain waiter);
    left unretrieved, asyncio logs each with a traceback when it is collected, after
    the one line the task already logged. Private attributes, looked up defensively.
    """
    manager = getattr(client, "_txn_manager", None)
    futures = [getattr(manager, n, None) for n in ("_transaction_waiter", "_pid_waiter")]
    accumulator = getattr(client, "_message_accumulator", None)
    batches = [
        *(b for queue in getattr(accumulator, "_batches", {}).values() for b in queue),
        *getattr(accumulator, "_pending_batches", ()),
    ]
    futures += [getattr(b, n, None) for b in batches for n in ("future", "_drain_waiter")]
    for future in futures:
        if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
            future.exception()


class KafkaTransactionalProducer(KafkaProducer, TransactionalProducer):
    """A batch producer whose records count only once a transaction commits.

    `start` runs InitProducerId (at the version the broker allows, see
    `txn_wire`), which bumps the id's epoch: the broker aborts the transaction
    an older producer with this id left open and refuses that producer from
    then on. Once fenced, this producer raises `ProducerFenced` from every
    `flush`, `commit` and `abort`; it never initialises again by itself, as that
    would fence the task's new owner in turn.

    A transaction begins when the first batch after a commit or an abort goes
    to aiokafka (or when a commit carries offsets only). `send` never blocks and
    must not run while `commit` or `abort` is under way: the task calls them
    between batches.
    """

    def __init__(
        self,
        url: str,
        servers: list[str],
        options: KafkaOptions,
        transactional_id: str,
        timeout_ms: int,
    ) -> None:
        super().__init__(url, servers, options)
        self.transactional_id = transactional_id
        self._timeout_ms = timeout_ms
        # aiokafka's begin_transaction, shared by every pump of the transaction.
        self._txn: asyncio.Future[None] | None = None
        self._fenced: ProducerFenced | None = None

    def _make_client(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            **self._options.transactional_producer(self.transactional_id, self._timeout_ms),
        )
        negotiate_init_producer_id(producer)
        return producer

    async def start(self) -> None:
        know_producer_fenced_code()
        await super().start()

    async def stop(self) -> None:
        # An open transaction's records must never count: abort it rather than leave
        # it to the transaction timeout (the next owner's InitProducerId would too).
        if self._producer is not None and self._txn is not None and self._fenced is None:
            try:
                await self.abort()
            except TransportError as exc:
                log.warning("stopping producer %r: %s", self.transactional_id, exc)
        client = self._producer
        if self._fenced is not None:
            self._errors.clear()  # reported as ProducerFenced already
        await super().stop()
        if self._fenced is not None:
            _retrieve_fatal_error(client)

    async def _begun(self) -> AIOKafkaProducer:
        producer = self.raw
        if self._txn is None:
            self._txn = asyncio.ensure_future(producer.begin_transaction())
        # Shielded: a pump cancelled at stop must not cancel the others' begin.
        await asyncio.shield(self._txn)
        return producer

    async def _submit(
        self, producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        await self._begun()
        return await super()._submit(producer, batch, topic, partition)

    async def flush(self) -> Mapping[TopicPartition, int]:
        self._raise_if_fenced()
        try:
            return await super().flush()
        except TransportError as exc:
            if fenced := self._fenced_by(exc):
                raise fenced from exc
            raise

    async def commit(
        self, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> Mapping[TopicPartition, int]:
        """Commit the transaction: its records and the group's input offsets, atomically.

        1. Flush: every record of the transaction is acknowledged. aiokafka would
           commit a transaction some of whose records failed to arrive, so a
           failed delivery aborts the transaction here instead.
        2. Add the input offsets to the transaction (AddOffsetsToTxn, then
           TxnOffsetCommit to the group's coordinator); a commit with offsets and
           no records opens a transaction for them.
        3. End the transaction with COMMIT: records and offsets count from now on,
           together.
        4. Forget the transaction: the next `send` begins the next one.

        A fenced producer raises `ProducerFenced`; any other failure aborts the
        transaction and raises `TransactionAborted`.
        """
        self._raise_if_fenced()
        try:
            # 1. flush
            acked = await self.flush()
            if self._txn is None and not offsets:
                return acked  # nothing was sent (every batch began it): nothing to commit
            producer = await self._begun()
            # 2. offsets into the transaction
            if offsets:
                await producer.send_offsets_to_transaction(
                    {KafkaTopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()},
                    group_id,
                )
            # 3. end it with COMMIT
            await self._end(producer.commit_transaction(), "commit")
        except ProducerFenced:
            raise  # from step 1
        except _TXN_ERRORS as exc:
            if fenced := self._fenced_by(exc):
                raise fenced from exc
            await self._abort_after(exc, offsets, group_id)
        # 4. the next send begins the next transaction
        self._txn = None
        return acked

    async def abort(self) -> None:
        """Abort the open transaction, if any.

        1. Drop the batches not yet handed to aiokafka: they would only be aborted.
        2. Wait for the deliveries under way: aiokafka ends a transaction after them.
        3. End the transaction with ABORT, if one began.
        4. Forget the failed deliveries: they belonged to the aborted transaction.
        """
        self._raise_if_fenced()
        producer = self.raw
        # 1. drop open batches
        self._open.clear()
        # 2. wait for deliveries under way
        if self._outstanding:
            await asyncio.wait(list(self._outstanding))
            self._outstanding = [f for f in self._outstanding if not f.done()]
        txn, self._txn = self._txn, None
        # 3. end it with ABORT
        if txn is not None:
            await asyncio.wait([txn])
        if txn is not None and not txn.cancelled() and txn.exception() is None:
            try:
                await self._end(producer.abort_transaction(), "abort")
            except ProducerFenced:
                raise
            except _TXN_ERRORS as exc:
                if fenced := self._fenced_by(exc):
                    raise fenced from exc
                raise TransportError(
                    f"broker {self._url}: aborting the transaction of {self.transactional_id!r} "
                    f"failed: {_describe(exc)}"
                ) from exc
        # 4. forget its failed deliveries
        self._errors.clear()

    async def _end(self, ending: Awaitable[None], what: str) -> None:
        """EndTxn, bounded by the request timeout.

        aiokafka retries EndTxn for as long as the connection fails, and Tansu
        closes the connection on a fenced producer's EndTxn instead of answering,
        so a fenced producer with only EndTxn left would wait for ever. Past the
        bound the outcome is unknown (aiokafka may still be retrying): the
        producer is unusable, as if fenced, and the next InitProducerId for its
        id settles the transaction either way (completes a commit the coordinator
        took, aborts one it never saw).
        """
        timeout_ms = self._options.request_timeout_ms
        try:
            await asyncio.wait_for(ending, timeout_ms / 1000)
        except TimeoutError as exc:
            self._fenced = ProducerFenced(
                f"broker {self._url}: the {what} of the transaction of "
                f"{self.transactional_id!r} got no answer within request_timeout_ms "
                f"({timeout_ms} ms); a broker that cuts a fenced producer off does this. "
                "Its outcome is settled when the id is next initialised"
            )
            raise self._fenced from exc

    async def _abort_after(
        self, cause: BaseException, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> None:
        where = ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items())
        reason = f" (offsets {where} of group {group_id!r})" if where else ""
        text = f"committing the transaction of {self.transactional_id!r}{reason} failed: "
        text += str(cause) if isinstance(cause, TransportError) else _describe(cause)
        try:
            await self.abort()
        except ProducerFenced:
            raise
        except TransportError as exc:
            # The broker aborts it after the transaction timeout; nothing counted.
            text += f"; aborting it failed too: {exc}"
        raise TransactionAborted(f"broker {self._url}: {text}") from cause

    def _fenced_by(self, exc: BaseException) -> ProducerFenced | None:
        """The ProducerFenced to raise for `exc`, remembered for every later call."""
        if self._fenced is None and (fencing := _fencing_in(exc)) is not None:
            self._fenced = ProducerFenced(
                f"broker {self._url}: transactional id {self.transactional_id!r} was taken "
                f"by a newer producer (the task moved), or its transaction outlived "
                f"transaction timeout {self._timeout_ms} ms: {_describe(fencing)}"
            )
        return self._fenced

    def _raise_if_fenced(self) -> None:
        if self._fenced is not None:
            raise self._fenced
