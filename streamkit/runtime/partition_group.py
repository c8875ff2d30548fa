"""A task's partition queues and the choice of what it processes next (Kafka Streams'
PartitionGroup): the lowest timestamp first across its partitions (DESIGN.md
invariant 2), each queue bounded with its partition paused when full (invariant 6).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ..transport.base import Consumer, RawRecord, TopicPartition
from .partition_queue import PartitionQueue

# A task held back for a partition with records on their way looks again this often.
HELD_BACK_RECHECK_S = 0.02

Chunks = list[tuple[TopicPartition, Sequence[RawRecord]]]


class PartitionGroup:
    """Owned by one task's coroutine (invariant 1); the worker's fetch loop feeds it
    through the task, between the task's awaits."""

    def __init__(self, partitions: set[TopicPartition], capacity: int, consumer: Consumer) -> None:
        self._queues = {tp: PartitionQueue(tp, capacity) for tp in sorted(partitions)}
        self._consumer = consumer
        # (first offset fetched, offset after the last fetched) per partition.
        self._fetched: dict[TopicPartition, tuple[int, int]] = {}
        # By a partition whose records are on their way, at the last `take_chunks`.
        self.held_back = False

    def enqueue(self, tp: TopicPartition, records: Sequence[RawRecord]) -> bool:
        """Queue fetched records; True when the partition should be paused."""
        full = self._queues[tp].put(records)
        self._fetched[tp] = (
            self._fetched.get(tp, (records[0].offset, 0))[0],
            records[-1].offset + 1,
        )
        return full

    def has_queued(self) -> bool:
        return any(self._queues.values())

    def buffered_records(self) -> int:
        """Records fetched but not yet taken: bounded by the partition queues' capacity."""
        return sum(q.size for q in self._queues.values())

    def fetched(self) -> dict[TopicPartition, tuple[int, int]]:
        """(first offset fetched, offset after the last fetched) per partition, since the
        task started or resumed (a copy: safe to call from another thread)."""
        return dict(self._fetched)

    def first_fetched(self) -> dict[TopicPartition, int]:
        """The first offset fetched of each partition, since the task started or resumed."""
        return {tp: first for tp, (first, _) in self.fetched().items()}

    def paused_partitions(self) -> int:
        """Partitions whose full queue paused them in the consumer (back-pressure)."""
        return sum(1 for q in list(self._queues.values()) if q.paused)

    def quiet_ms(self) -> float:
        """How long every input partition has been processed to its end, as watched."""
        if self.has_queued():
            return 0.0
        consumer = self._consumer
        return min((consumer.quiet_for(tp) for tp in self._queues), default=0.0) * 1000

    def clear(self) -> None:
        """Forget everything fetched: the consumer fetches again from the commit."""
        for queue in self._queues.values():
            queue.clear()
        self._fetched.clear()

    def forget(self, tp: TopicPartition) -> None:
        """Forget what was fetched of one partition: it is fetched again from a seek."""
        self._queues[tp].clear()
        self._fetched.pop(tp, None)

    def take_chunks(self) -> Chunks:
        if len(self._queues) > 1:
            return self._take_in_time_order()
        chunks = []
        for q in self._queues.values():
            if q:
                chunks.append((q.tp, q.take()))
                self._resume_if_drained(q)
        return chunks

    def _take_in_time_order(self) -> Chunks:
        """Several partitions: what may go next when the lowest timestamp goes first
        (DESIGN.md invariant 2), as Kafka Streams' PartitionGroup chooses it with
        max.task.idle.ms 0.

        1. A partition with nothing queued that the consumer has not seen at its end
           holds the task back: the records on their way may be the earliest (a
           table's rows before the stream that looks them up). Empty partitions at
           their end do not.
        2. The chunks at the heads of the queues are merged by their records'
           timestamps, lowest head first, until one partition's chunk runs out while
           more of that partition is queued or on the broker: its next record may
           come before the others' rest.
        3. What was not taken goes back to the front of its queue.
        """
        consumer = self._consumer
        self.held_back = False
        queues = list(self._queues.values())
        # 1. An empty partition with records on their way holds the task back.
        for q in queues:
            if not q and consumer.quiet_for(q.tp) <= 0:
                self.held_back = True
                return []
        heads = [(q, q.take()) for q in queues if q]
        if len(heads) == 1:
            self._resume_if_drained(heads[0][0])
            return [(heads[0][0].tp, heads[0][1])]
        # 2. Lowest head first, until a chunk with more behind it runs out.
        taken = [0] * len(heads)
        heap = [(chunk[0].timestamp, i) for i, (_, chunk) in enumerate(heads)]
        heapq.heapify(heap)
        while heap:
            _, i = heap[0]
            q, chunk = heads[i]
            taken[i] += 1
            if taken[i] < len(chunk):
                heapq.heapreplace(heap, (chunk[taken[i]].timestamp, i))
                continue
            heapq.heappop(heap)
            if q or consumer.quiet_for(q.tp) <= 0:
                break
        # 3. The rest back to the front.
        chunks = []
        for (q, chunk), n in zip(heads, taken, strict=True):
            if n < len(chunk):
                q.put_back(chunk[n:])
            if n:
                chunks.append((q.tp, chunk[:n]))
            self._resume_if_drained(q)
        return chunks

    def _resume_if_drained(self, q: PartitionQueue) -> None:
        if q.drained_enough_to_resume():
            self._consumer.resume(q.tp)
