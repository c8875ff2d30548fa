"""Replays a changelog partition into a task's store before the task processes input.

Restore starts at the offset checkpointed inside the SQLite file. A file with no
checkpoint, or one outside the changelog's current range (the topic was recreated,
or retention moved past it), is wiped and replayed in full: never a crash, never
silent loss (DESIGN.md invariant 3). It applies every record of every fetched
batch and stops only when its position reaches the end, because some brokers
under-report the end offset. Applied rows reach the file in transactions of
several fetches (`TaskStore.apply_changelog`), each with the changelog offset it
reaches, and the rest when the restore ends, however it ends.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..transport.base import PartitionReader
from .restore_listener import RestoreListener
from .task_store import TaskStore

if TYPE_CHECKING:
    from ..topology import TaskId

log = logging.getLogger("streamkit.restore")

PROGRESS_EVERY_S = 2.0
# How long one fetch of the restore waits for records. Short: under exactly-once a
# changelog ends with a transaction marker, so a store at its checkpoint is one
# marker short of the end, and the fetch that skips it returns no records; a long
# wait there cost a second per store on every task move.
FETCH_WAIT_S = 0.1
BAR_FROM_RECORDS = 10_000


async def restore(
    store: TaskStore,
    reader: PartitionReader,
    *,
    task: TaskId,
    max_records: int,
    cancelled: Callable[[], bool] = lambda: False,
    stop_at: int | None = None,
    listeners: Sequence[RestoreListener] = (),
    progress: Callable[[int], None] = lambda left: None,
) -> int:
    """Bring the store up to the changelog's end, or to `stop_at` if that comes first;
    return the records applied. `listeners` (the metrics', the user's) hear of it on
    behalf of `task`; `progress` hears how many records are left, at the start and
    after each batch."""
    tp = store.changelog_tp
    first, end = await reader.offsets(tp)
    checkpoint = store.sqlite.checkpoint()
    if checkpoint is not None and checkpoint > end and end > first:
        # The end may be under-reported until a fetch shows the high watermark.
        reader.assign({tp: end - 1})
        await reader.getmany(timeout_s=1.0, max_records=1)
        first, end = await reader.offsets(tp)
    if checkpoint is not None and not first <= checkpoint <= end:
        # An empty changelog on memory://, whose topics end with their process: the file
        # is an earlier run's, as expected there (no cause for alarm).
        earlier_run = not reader.topics_outlive_process and first == end == 0
        say = log.debug if earlier_run else log.warning
        say(
            "store %s of %s reflects changelog offset %d, outside %s[%d] offsets %d..%d: "
            "replaying the whole changelog",
            store.table.name,
            store.sqlite.path.parent.name,
            checkpoint,
            tp.topic,
            tp.partition,
            first,
            end,
        )
        store.sqlite.wipe()
        checkpoint = None
    store.changelog_end = end
    if stop_at is not None:
        end = min(end, stop_at)
    start = first if checkpoint is None else checkpoint
    progress(max(0, end - start))
    if start >= end:
        return 0
    total = end - start
    reader.assign({tp: start})
    name = store.table.name
    for listener in listeners:
        await listener.on_restore_start(task, name, tp, start, end)
    applied = 0
    began = last_report = time.monotonic()
    # A bar for people watching a terminal; logs (below) for everyone else.
    bar = tqdm(
        total=total,
        desc=f"restore {store.table.name} {store.sqlite.path.parent.name}",
        unit="rec",
        unit_scale=True,
        leave=False,
        disable=not sys.stderr.isatty() or total < BAR_FROM_RECORDS,
    )
    try:
        while reader.position(tp) < end and not cancelled():
            batch = (await reader.getmany(timeout_s=FETCH_WAIT_S, max_records=max_records)).get(tp)
            reached = reader.position(tp)
            if batch and stop_at is not None:
                batch = [r for r in batch if r.offset < stop_at]
                reached = min(reached, stop_at)
            if batch:
                store.apply_changelog(batch, reached)
                applied += len(batch)
                bar.update(len(batch))
                for listener in listeners:
                    await listener.on_batch_restored(task, name, tp, reached, len(batch))
            else:
                _, end = await reader.offsets(tp)
                store.changelog_end = end
                if stop_at is not None:
                    end = min(end, stop_at)
            progress(max(0, end - reader.position(tp)))
            last_report = _report(
                store, applied, total, end - reader.position(tp), began, last_report
            )
    finally:
        # What was applied reaches the file, also when the restore was cancelled or the
        # broker went away: the next one starts from there.
        store.flush_restored()
        bar.close()
    for listener in listeners:
        await listener.on_restore_end(task, name, tp, applied)
    return applied


def _report(
    store: TaskStore, applied: int, total: int, left: int, began: float, last_report: float
) -> float:
    """Log progress every few seconds; returns when it last did."""
    now = time.monotonic()
    if now - last_report < PROGRESS_EVERY_S:
        return last_report
    rate = applied / (now - began)
    log.info(
        "restoring %s for task %s: %d/%d records, %.0f rec/s, ETA %.0f s",
        store.table.name,
        store.sqlite.path.parent.name,
        applied,
        total,
        rate,
        max(0, left) / rate if rate else 0,
    )
    return now
