"""What the chaos run checks, from the topics alone: the truth is the input topic.

Every click has a unique id and a user. For each output the checker counts the
inputs that have no output (lost: must be 0), and the extra outputs (duplicates:
the work a crash made a worker redo, bounded by the commit interval, reported).
The counting table, read from its changelog, must never be below the truth; every
closed window's count must equal the truth, however often it was emitted. Under
exactly-once every output holds each input once and nothing above the truth.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamkit import Topic
from streamkit.transport import RawRecord, TopicPartition, transport_for

from . import app as chaos_app


async def read_topic(
    url: str, topic: str, partitions: int, *, read_committed: bool
) -> list[RawRecord]:
    """Every record of a topic, partition by partition (to the end a fetch reports)."""
    reader = transport_for(url, read_committed=read_committed).reader()
    await reader.start()
    out: list[RawRecord] = []
    try:
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            first, end = await reader.offsets(tp)
            reader.assign({tp: first})
            while reader.position(tp) < end:
                batch = (await reader.getmany(timeout_s=1.0, max_records=10_000)).get(tp)
                if batch:
                    out.extend(batch)
                else:
                    _, end = await reader.offsets(tp)
    finally:
        await reader.stop()
    return out


def decode(topic: Topic, records: Sequence[RawRecord]) -> list[tuple[Any, Any]]:
    return [topic.decode(r) for r in records]


@dataclass
class Windows:
    """The windows the input opened (`user@start` -> its partition) and what was emitted."""

    opened: dict[str, int]
    clicks: list[RawRecord]
    emitted: list[RawRecord]
    closed: set[str]

    @property
    def missing(self) -> set[str]:
        """Windows of the input never emitted: not closed yet, or lost."""
        return self.opened.keys() - self.closed


async def read_windows(
    url: str, *, read_committed: bool, chaos: chaos_app.ChaosApp = chaos_app.chaos
) -> Windows:
    size_ms = round(chaos.window_s * 1000)
    parts = chaos.partitions
    clicks = await read_topic(url, chaos.clicks.name, parts, read_committed=read_committed)
    opened = {
        f"{chaos.clicks.decode(r)[0]}@{r.timestamp // size_ms * size_ms}": r.partition
        for r in clicks
    }
    emitted = await read_topic(url, chaos.windowed.name, parts, read_committed=read_committed)
    return Windows(opened, clicks, emitted, {chaos.windowed.decode(r)[0] for r in emitted})


@dataclass
class Output:
    """One output topic against the inputs."""

    records: int = 0
    lost: int = 0
    duplicates: int = 0
    # Results that miss an input's effect (always wrong), and results that hold one
    # twice (a redone record under at-least-once; wrong under exactly-once).
    wrong: list[str] = field(default_factory=list)
    over: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    inputs: int
    outputs: dict[str, Output]
    table_below_truth: list[str]
    table_above_truth: list[str]
    windows: int  # closed windows checked

    @property
    def lost(self) -> int:
        return sum(o.lost for o in self.outputs.values())

    @property
    def duplicates(self) -> int:
        return sum(o.duplicates for o in self.outputs.values())

    def failures(self, exactly_once: bool) -> list[str]:
        """What breaks the guarantee: anything lost, state below the truth, wrong
        windows; under exactly-once also any duplicate and state above the truth."""
        found = [
            f"{name}: {o.lost} inputs without output" for name, o in self.outputs.items() if o.lost
        ]
        found += [f"{name}: {w}" for name, o in self.outputs.items() for w in o.wrong[:5]]
        found += [f"table below the truth: {k}" for k in self.table_below_truth[:5]]
        if exactly_once:
            found += [f"{name}: {w}" for name, o in self.outputs.items() for w in o.over[:5]]
            found += [
                f"{n}: {o.duplicates} duplicates" for n, o in self.outputs.items() if o.duplicates
            ]
            found += [f"table above the truth: {k}" for k in self.table_above_truth[:5]]
        return found


def _ids_output(ids: Sequence[int], truth: set[int]) -> Output:
    seen = Counter(ids)
    return Output(
        records=len(ids),
        lost=len(truth - seen.keys()),
        duplicates=len(ids) - len(seen),
        wrong=[f"id {i} was never an input" for i in sorted(seen.keys() - truth)[:5]],
    )


async def check(
    url: str, *, read_committed: bool, chaos: chaos_app.ChaosApp = chaos_app.chaos
) -> Verdict:
    """Read the input, the outputs and the table's changelog; compare."""
    parts = chaos.partitions

    async def read(topic: Topic) -> list[tuple[Any, Any]]:
        return decode(
            topic, await read_topic(url, topic.name, parts, read_committed=read_committed)
        )

    inputs = await read_topic(url, chaos.clicks.name, parts, read_committed=read_committed)
    clicks = [(chaos.clicks.decode(r)[1], r.timestamp) for r in inputs]
    ids = {c.id for c, _ in clicks}
    per_user = Counter(c.user for c, _ in clicks)
    outputs: dict[str, Output] = {}
    outputs["echoed"] = _ids_output([v for _, v in await read(chaos.echoed)], ids)
    outputs["joined"] = _ids_output(
        [int(v.rsplit(":", 1)[1]) for _, v in await read(chaos.joined)], ids
    )

    # The counting agent: per user, the counts 1..truth must all appear, none above.
    counts_seen: defaultdict[str, list[int]] = defaultdict(list)
    for user, n in await read(chaos.counted):
        counts_seen[user].append(n)
    counted = Output(records=sum(len(v) for v in counts_seen.values()))
    for user, truth in per_user.items():
        got = Counter(counts_seen.get(user, []))
        counted.lost += sum(1 for k in range(1, truth + 1) if k not in got)
        counted.duplicates += sum(n - 1 for n in got.values())
        if above := sorted(k for k in got if k > truth):
            counted.over.append(f"user {user}: counts {above[:5]} above the truth {truth}")
    outputs["counted"] = counted

    # Closed windows: every emission of a window equals the truth.
    size_ms = round(chaos.window_s * 1000)
    window_truth = Counter(f"{c.user}@{ts // size_ms * size_ms}" for c, ts in clicks)
    emitted: defaultdict[str, list[int]] = defaultdict(list)
    for window, n in await read(chaos.windowed):
        emitted[window].append(n)
    windowed = Output(records=sum(len(v) for v in emitted.values()))
    for window, truth in window_truth.items():
        got = emitted.get(window)
        if not got:
            windowed.lost += truth
            continue
        windowed.duplicates += len(got) - 1
        if any(n < truth for n in got):
            windowed.wrong.append(f"window {window}: emitted {got}, truth {truth}")
        elif any(n > truth for n in got):
            windowed.over.append(f"window {window}: emitted {got}, truth {truth}")
    outputs["windowed"] = windowed

    changelog = chaos.app.tables["counts"].changelog
    table: dict[str, int] = {}
    for user, n in await read(changelog):
        table[user] = n
    below = [f"{u}: {table.get(u)} < {t}" for u, t in per_user.items() if table.get(u, 0) < t]
    above = [f"{u}: {table[u]} > {t}" for u, t in per_user.items() if table.get(u, 0) > t]
    return Verdict(len(clicks), outputs, below, above, len(window_truth))
