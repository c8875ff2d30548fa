"""`streamkit reset APP --to-earliest`: make an app process its input again from a
chosen position, with fresh state (Kafka's kafka-streams-application-reset, plus the
local state that KafkaStreams#cleanUp removes).

A reset is refused while a worker of the app is alive: a running worker would commit
over the new offsets and keep its state. Alive means a member of the group, or a
worker whose status heartbeat (runtime/status.py) is not yet gone.

`plan_reset` reads what the reset would do, and changes nothing (`--dry-run` shows
it); `apply_reset` does it and says what it could not do. A broker that can neither
delete an internal topic nor truncate it leaves that topic's records in place: a
changelog left so would hand its old state to the next worker, so that is reported
as a reset not completed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import TransportError
from .offsets import OffsetMove, ResetRefused, refuse_running
from .runtime.status import read_status, status_topic
from .transport import transport_for
from .transport.base import TopicPartition
from .transport.group_admin import GroupAdmin

if TYPE_CHECKING:
    from .app import App
    from .topology import Topology


@dataclass(frozen=True)
class Position:
    """Where the input starts again: the earliest or latest offset, the first record at
    or after a time, or one offset for every partition (kept within its records)."""

    kind: Literal["earliest", "latest", "datetime", "offset"]
    value: int = 0  # ms since the epoch for "datetime"; the offset for "offset"

    def describe(self) -> str:
        if self.kind == "datetime":
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.value / 1000))
            return f"the first records at or after {when}"
        if self.kind == "offset":
            return f"offset {self.value}"
        return f"the {self.kind} offsets"


@dataclass
class ResetPlan:
    app_id: str
    broker: str
    position: Position
    moves: list[OffsetMove] = field(default_factory=list)
    # Changelogs, repartition topics and the status topic that exist on the broker.
    internal_topics: list[str] = field(default_factory=list)
    repartition_topics: list[str] = field(default_factory=list)
    state_dir: Path | None = None  # None: no local state here

    def describe(self) -> list[str]:
        lines = [f"reset of app {self.app_id!r} on {self.broker} to {self.position.describe()}:"]
        lines += [f"  {m.change()}" for m in self.moves]
        if not self.moves:
            lines.append("  no input topic exists yet: no offsets to move")
        lines += [f"  internal topic {t}: delete" for t in self.internal_topics]
        if self.state_dir is not None:
            lines.append(f"  local state {self.state_dir}: remove")
        else:
            lines.append("  local state: none in this data dir")
        return lines


async def plan_reset(app: App, admin: GroupAdmin, position: Position) -> ResetPlan:
    """What a reset would do; refused (ResetRefused) while a worker of the app is alive."""
    await _refuse_alive(app, admin)
    topology = await _topology_on(app, admin)
    repartition = {t.name for t in topology.repartition_topics}
    inputs = [t for t in topology.source_topics() if t not in repartition]
    plan = ResetPlan(app.id, admin.url, position)
    counts = await admin.partition_counts(inputs)
    for topic in inputs:
        for partition in range(counts.get(topic, 0)):
            tp = TopicPartition(topic, partition)
            before = await admin.committed(app.id, tp)
            plan.moves.append(OffsetMove(app.id, tp, before, await _target(admin, tp, position)))
    internal = [t.name for t in topology.internal_topics()] + [status_topic(app.id).name]
    existing = await admin.partition_counts(internal)
    plan.internal_topics = [t for t in internal if t in existing]
    plan.repartition_topics = [t for t in plan.internal_topics if t in repartition]
    state_dir = app.settings.data_dir / app.id
    plan.state_dir = state_dir if state_dir.exists() else None
    return plan


async def apply_reset(plan: ResetPlan, admin: GroupAdmin) -> list[str]:
    """Carry out a plan; returns what could not be done (empty: the reset is complete).

    1. Commit the input offsets for the group (refused by the broker if a member
       joined since the plan).
    2. Delete the internal topics; those the broker would not delete are truncated to
       their end, and the group's offsets on truncated repartition topics moved there.
    3. Remove the local state directory.
    """
    # 1. Input offsets.
    if plan.moves:
        try:
            await admin.commit(plan.app_id, {m.tp: m.after for m in plan.moves})
        except TransportError as exc:
            raise ResetRefused(f"{exc}; nothing was reset") from exc
    # 2. Internal topics: deleted, or else truncated.
    not_done: list[str] = []
    refused = {
        t: why for t, why in (await admin.delete_topics(plan.internal_topics)).items() if why
    }
    ends = {}
    counts = await admin.partition_counts(list(refused))
    for topic in refused:
        for partition in range(counts.get(topic, 0)):
            tp = TopicPartition(topic, partition)
            ends[tp] = (await admin.bounds(tp))[1]
    truncated = await admin.truncate(ends)
    for topic, why in refused.items():
        failures = {why_not for tp, why_not in truncated.items() if tp.topic == topic and why_not}
        if failures:
            not_done.append(
                f"internal topic {topic}: the broker would neither delete it ({why}) nor "
                f"truncate it ({'; '.join(sorted(failures))}): delete it by hand before a "
                "worker starts, or the worker restores its old records"
            )
    repartition_ends = {tp: end for tp, end in ends.items() if tp.topic in plan.repartition_topics}
    if repartition_ends and not not_done:
        await admin.commit(plan.app_id, repartition_ends)
    # 3. Local state.
    if plan.state_dir is not None:
        shutil.rmtree(plan.state_dir)
    return not_done


async def _refuse_alive(app: App, admin: GroupAdmin) -> None:
    refuse_running(app.id, await admin.member_count(app.id))
    settings = app.settings
    transport = transport_for(settings.broker, settings.transport_options())
    now_ms = time.time() * 1000
    alive = [w for w in await read_status(transport, status_topic(app.id)) if not w.gone(now_ms)]
    if alive:
        names = ", ".join(
            f"{w.worker} (heard from {w.silent_for_s(now_ms):.0f} s ago; gone after "
            f"{w.gone_after_s:g} s of silence)"
            for w in alive
        )
        raise ResetRefused(
            f"app {app.id!r} has live workers: {names}. Stop every worker of the app first "
            "(a killed one counts as alive until its status is gone)"
        )


async def _topology_on(app: App, admin: GroupAdmin) -> Topology:
    """The app's topology, sized by the broker's counts of topics it does not declare."""
    topics = app.all_topics()
    counts = await admin.partition_counts([t.name for t in topics])
    for topic in topics:
        if topic.declared_partitions is None:
            topic.partitions = counts.get(topic.name, topic.partitions)
    return app.topology()


async def _target(admin: GroupAdmin, tp: TopicPartition, position: Position) -> int:
    first, end = await admin.bounds(tp)
    if position.kind == "earliest":
        return first
    if position.kind == "latest":
        return end
    if position.kind == "offset":
        return min(max(position.value, first), end)
    return await admin.offset_for_time(tp, position.value)
