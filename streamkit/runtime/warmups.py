"""The probing rebalance (KIP-441): a worker that warms up copies asks for the
rebalance that hands their tasks over.

The leader keeps a stateful task on its caught-up owner while the member it should
move to warms up a copy (`placement.hold_for_warmups`). Only another plan moves it,
so the member that warms asks for one: as soon as every warm-up has caught up, or
after `probing_rebalance_interval_s` at the latest (Kafka Streams probes on the
interval only; asking when caught up makes the hand-over follow the catch-up). An
early ask that the leader answers with warm-ups again (they fell behind meanwhile)
makes the next early ask wait longer, so that a copy hovering at the bound cannot
start a rebalance storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from ..topology import TaskId
from .assignor import MemberInfo

log = logging.getLogger("streamkit.warmups")

LOOK_EVERY_S = 0.5
FIRST_BACKOFF_S = 1.0


async def probe_when_warm(
    assignment: Callable[[], MemberInfo],
    lags: Callable[[], Mapping[TaskId, int]],
    rejoin: Callable[[], None],
    *,
    acceptable_lag: int,
    interval_s: float,
) -> None:
    """Run until cancelled: 1. wait for an assignment with warm-ups; 2. wait until they
    have all caught up (and any back-off has passed), or the interval has; 3. ask to
    rejoin; then from 1 with the next assignment."""
    loop = asyncio.get_running_loop()
    backoff = 0.0
    asked_early = False
    seen: MemberInfo | None = None
    since = loop.time()
    asked = False
    while True:
        await asyncio.sleep(LOOK_EVERY_S)
        current = assignment()
        if current is not seen:
            # 1. A new assignment: a new generation of the group.
            seen, since, asked = current, loop.time(), False
            if not current.warmup:
                backoff, asked_early = 0.0, False
            elif asked_early:
                backoff = min(interval_s, max(FIRST_BACKOFF_S, 2 * backoff))
        if asked or not current.warmup:
            continue
        # 2. Caught up, or waited long enough.
        waited = loop.time() - since
        behind = {t: lags().get(t) for t in current.warmup}
        caught_up = all(lag is not None and lag <= acceptable_lag for lag in behind.values())
        if caught_up and waited >= backoff:
            why, asked_early = "warm-up copies caught up", True
        elif waited >= interval_s:
            why, asked_early = f"probing after {interval_s:g} s", False
        else:
            continue
        # 3. Ask for the plan that hands them over.
        log.info(
            "%s (%s): asking the group to rebalance",
            why,
            " ".join(f"{t} lag {'?' if lag is None else lag}" for t, lag in sorted(behind.items())),
        )
        rejoin()
        asked = True
