"""Reports what a stream processor silently suffers from: a blocked event loop and
partitions that stop moving.

A blocked loop sends no heartbeats, so the broker would expel the worker with no
word about why. A watchdog thread notices the stall while it lasts and names the
agent whose code is on the loop's stack. A partition whose position stays put
while records wait for it is reported with its task.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import CodeType, FrameType

from ..agent import Agent
from .task import Task

log = logging.getLogger("streamkit.liveness")


class LoopWatchdog:
    def __init__(self, agents: Iterable[Agent], threshold_s: float) -> None:
        self._threshold_s = threshold_s
        self._codes: dict[CodeType, str] = {}
        for agent in agents:
            code = getattr(agent.fn, "__code__", None)
            if code is not None:
                self._codes[code] = agent.name
        self._beat = time.monotonic()
        self._late_s = 0.0
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._thread: threading.Thread | None = None

    async def run(self) -> None:
        """The loop's side: beat while it is free to."""
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="streamkit-watchdog", daemon=True)
        self._thread.start()
        interval = self._threshold_s / 4
        try:
            while True:
                self._beat = beat = time.monotonic()
                await asyncio.sleep(interval)
                self._late_s = max(0.0, time.monotonic() - beat - interval)
        finally:
            self._stop.set()

    def lag_s(self) -> float:
        """How late the loop last woke from its sleep between beats, or, if longer, how
        long past its next wake-up it is now: a blocked loop shows while it lasts."""
        overdue = time.monotonic() - self._beat - self._threshold_s / 4
        return max(self._late_s, overdue, 0.0)

    def _watch(self) -> None:
        reported_beat = None
        while not self._stop.wait(self._threshold_s / 4):
            beat = self._beat
            stalled = time.monotonic() - beat
            if stalled < self._threshold_s or beat == reported_beat:
                continue
            reported_beat = beat
            frame = sys._current_frames().get(self._loop_thread)
            agent, where = self._blamed(frame)
            log.warning(
                "the event loop has been blocked for %.1f s%s%s: nothing else runs meanwhile, "
                "heartbeats included, so the broker may expel this worker; await instead of "
                "blocking, or move the work to a thread with asyncio.to_thread",
                stalled,
                f" by agent {agent}" if agent else "",
                f" at {where}" if where else "",
            )

    def _blamed(self, frame: FrameType | None) -> tuple[str | None, str | None]:
        innermost = None
        while frame is not None:
            if innermost is None:
                innermost = f"{frame.f_code.co_filename}:{frame.f_lineno}"
            name = self._codes.get(frame.f_code)
            if name is not None:
                return name, f"{frame.f_code.co_filename}:{frame.f_lineno}"
            frame = frame.f_back
        return None, innermost


async def watch_progress(tasks: Callable[[], Iterable[Task]], interval_s: float) -> None:
    """Warn about partitions whose position has not moved for an interval while records wait."""
    last: dict[tuple[str, object], int] = {}
    while True:
        await asyncio.sleep(interval_s)
        current: dict[tuple[str, object], int] = {}
        for task in tasks():
            for tp, position, waiting in task.progress():
                key = (str(task.id), tp)
                current[key] = position
                if waiting and last.get(key) == position:
                    log.warning(
                        "%s[%d] in task %s has not moved from offset %d for %.0f s while %d "
                        "records wait: an agent of this task is stuck",
                        tp.topic,
                        tp.partition,
                        task.id,
                        position,
                        interval_s,
                        waiting,
                    )
        last = current
