"""`streamkit reset`: move a group's committed offset, the way past a poison pill.

Under the default `fail` policy a record that cannot be processed stops the worker,
which has committed every record before it: the committed offset *is* the failed
record, so every restart fails on it again. Moving the committed offset past it
(`--skip`) or anywhere else (`--to-offset N`) is how an operator moves on without
changing the app.

A group's offsets belong to its members while it has any: a running worker would
overwrite the move with its next commit, or be told by the broker to rejoin. So
the move is refused while any member is in the group; Kafka itself refuses a
commit from outside a group that has members, which is a second check.

The broker is reached through a `GroupAdmin` (transport/group_admin.py), which
commits without joining the group. `streamkit reset APP --to-earliest` (and the
other positions) resets a whole application: app_reset.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import StreamkitError, TransportError
from .transport.base import TopicPartition
from .transport.group_admin import group_admin_for


class ResetRefused(StreamkitError):
    """The offset was not moved: the group has members, or the offset is not valid."""


@dataclass(frozen=True)
class OffsetMove:
    group: str
    tp: TopicPartition
    before: int | None  # None: the group had committed nothing on the partition
    after: int

    def describe(self) -> str:
        return f"group {self.group!r}: {self.change()}"

    def change(self) -> str:
        """`committed offset of t[0]: 5 -> 7 (2 records skipped)`."""
        where = f"{self.tp.topic}[{self.tp.partition}]"
        before = "none" if self.before is None else str(self.before)
        line = f"committed offset of {where}: {before} -> {self.after}"
        if self.before is not None and self.after > self.before:
            n = self.after - self.before
            line += f" ({n} record{'s' if n != 1 else ''} skipped)"
        elif self.before is not None and self.after < self.before:
            line += f" ({self.before - self.after} records to be processed again)"
        return line


def _target(group: str, tp: TopicPartition, before: int | None, to_offset: int | None) -> int:
    """`--to-offset N` as given, or (`--skip`, None) the offset after the committed one."""
    if to_offset is not None:
        return to_offset
    if before is None:
        raise ResetRefused(
            f"group {group!r} has no committed offset on {tp.topic}[{tp.partition}] to skip "
            "past: give --to-offset"
        )
    return before + 1


def _check_range(tp: TopicPartition, offset: int, first: int, end: int) -> None:
    if not first <= offset <= end:
        raise ResetRefused(
            f"offset {offset} is outside {tp.topic}[{tp.partition}], whose records are "
            f"{first}..{end - 1} (give {first} to {end})"
        )


def refuse_running(group: str, members: int) -> None:
    if members:
        raise ResetRefused(
            f"group {group!r} has {members} running member{'s' if members != 1 else ''}: "
            "stop every worker of the app first (a running worker would commit over the move)"
        )


async def reset_offset(
    broker: str,
    group: str,
    tp: TopicPartition,
    *,
    to_offset: int | None = None,
    client_options: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> OffsetMove:
    """Move `group`'s committed offset on `tp` to `to_offset`, or (None) one past the
    committed offset, when no member is in the group; the move made (or, with
    `dry_run`, the move it would make)."""
    admin = group_admin_for(broker, client_options)
    try:
        await admin.start()
        refuse_running(group, await admin.member_count(group))
        counts = await admin.partition_counts([tp.topic])
        if tp.partition >= counts.get(tp.topic, 0):
            raise ResetRefused(f"no partition {tp.topic}[{tp.partition}] on {broker}")
        before = await admin.committed(group, tp)
        after = _target(group, tp, before, to_offset)
        first, end = await admin.bounds(tp)
        _check_range(tp, after, first, end)
        if dry_run:
            return OffsetMove(group, tp, before, after)
        try:
            await admin.commit(group, {tp: after})
        except TransportError as exc:
            if "Generation" in str(exc) or "UnknownMember" in str(exc):
                refuse_running(group, 1)  # a member joined meanwhile
            raise
    except TransportError as exc:
        raise ResetRefused(str(exc)) from exc
    finally:
        await admin.close()
    return OffsetMove(group, tp, before, after)
