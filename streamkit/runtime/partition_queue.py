"""A partition's fetched records waiting for their task, bounded in records."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ..transport.base import RawRecord, TopicPartition


class PartitionQueue:
    """Full means pause the partition in the consumer; half drained means resume it."""

    __slots__ = ("_chunks", "capacity", "paused", "size", "tp")

    def __init__(self, tp: TopicPartition, capacity: int) -> None:
        self.tp = tp
        self.capacity = capacity
        self._chunks: deque[Sequence[RawRecord]] = deque()
        self.size = 0
        self.paused = False

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def put(self, chunk: Sequence[RawRecord]) -> bool:
        """Queue a fetched chunk; True when the queue is now full and should be paused."""
        self._chunks.append(chunk)
        self.size += len(chunk)
        if self.size >= self.capacity and not self.paused:
            self.paused = True
            return True
        return False

    def take(self) -> Sequence[RawRecord]:
        chunk = self._chunks.popleft()
        self.size -= len(chunk)
        return chunk

    def put_back(self, rest: Sequence[RawRecord]) -> None:
        """The part of the chunk taken last that was not processed: next in line again."""
        self._chunks.appendleft(rest)
        self.size += len(rest)

    def drained_enough_to_resume(self) -> bool:
        if self.paused and self.size <= self.capacity // 2:
            self.paused = False
            return True
        return False

    def clear(self) -> None:
        """Forget fetched records; after a rebalance the consumer fetches from the commit."""
        self._chunks.clear()
        self.size = 0
        self.paused = False
