"""The cost curve: the count and the windowed count as their state grows far past the
write-behind cache, and the restore of big changelogs.

At each size (`keys`: 10 thousand, 1 million, 5 million in a full run):

1. The count app's changelog holds one record per key (its count, 1 to 5), in a
   scattered key order. The restore ceiling replays it into SQLite files, which are
   then read back: every key, with its changelog value.
2. A fresh count worker restores the same changelog (its log gives the records and
   seconds per task), then counts `curve_records` payments whose keys are drawn
   uniformly from all `keys`: with more keys than the cache holds (50,000 per task),
   most reads go to SQLite. Each output must be the key's restored count plus its
   payments so far; afterwards the state files must hold every key's final count.
3. The windowed count does the same on a changelog of one 10 s window per key,
   written as its window store writes one, with every payment inside that window.

Reported per point: records/s while processing the payments (first output to last,
as for the other workloads), CPU per record, the restore's records/s, the worker's
peak RSS over its whole life (restore included), and the size of its SQLite files
(WAL included) when it stopped.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import verify
from .data import (
    base_count,
    curve_changelog,
    curve_inputs,
    curve_window_changelog,
    window_routing,
)
from .kafka import BenchError, create_topics, fill
from .runs import RESTORED, read_store, say

if TYPE_CHECKING:
    from .runs import Run

# (app, changelog records of a size, how they are partitioned)
APPS = {
    "count": (curve_changelog, None),
    "windowed_count": (curve_window_changelog, window_routing),
}


async def curve(run: Run) -> None:
    cfg = run.cfg
    points: list[dict[str, Any]] = []
    restores: list[dict[str, Any]] = []
    for keys in cfg.curve_keys:
        label = f"curve-{keys}"
        source = run.name(f"{label}-in")
        inputs = curve_inputs(cfg.curve_records, keys)
        await create_topics(run.url, [source], cfg.partitions)
        await fill(run.url, source, cfg.partitions, inputs)
        for app, (changelog_of, routing) in APPS.items():
            app_id = run.name(f"{label}-{app}")
            changelog_topic = f"{app_id}-counts-changelog"
            await create_topics(
                run.url, [changelog_topic], cfg.partitions, {"cleanup.policy": "compact"}
            )
            await fill(
                run.url, changelog_topic, cfg.partitions, changelog_of(keys), routing=routing
            )
            if app == "count":
                restores.append(
                    await _restore_ceiling(run, f"{label}-ceiling", changelog_topic, keys)
                )
            point = await _point(run, app, app_id, source, inputs, keys)
            points.append(point)
            if app == "count":
                ceiling = restores[-1]
                ceiling.update(
                    records_per_s=point["restore_records_per_s"],
                    rss_mb=point["rss_mb"],
                    sqlite_mb=point["sqlite_mb"],
                    ratio=point["restore_records_per_s"] / ceiling["ceiling_records_per_s"],
                )
    run.results["curve"] = summary(points, restores)


def summary(points: list[dict[str, Any]], restores: list[dict[str, Any]]) -> dict[str, Any]:
    """The points, and the figures the targets judge: count at 1 million keys over count
    at 10 thousand, and the peak RSS at 5 million keys (either app)."""
    count = {p["keys"]: p["records_per_s"] for p in points if p["workload"] == "count"}
    at_5m = [p["rss_mb"] for p in points if p["keys"] == 5_000_000]
    return {
        "points": points,
        "restore": restores,
        "count_1m_over_10k": (
            count[1_000_000] / count[10_000] if {10_000, 1_000_000} <= count.keys() else None
        ),
        "peak_rss_mb_5m": max(at_5m) if at_5m else None,
    }


async def _restore_ceiling(run: Run, label: str, changelog_topic: str, keys: int) -> dict[str, Any]:
    proc = run.ceiling(label, "restore", "", "--changelog", changelog_topic)
    try:
        if await proc.wait_exit(_timeout(run, keys)) != 0:
            raise BenchError(f"{label} failed\n{proc.tail()}")
    finally:
        await proc.stop()
    result = proc.last_json()
    files = sorted(run.data_dir(label).glob("restore-*.sqlite"))
    _check_files(label, files, keys, Counter())
    say(f"{label}: restored {keys:,} records at {result['records_per_s']:,.0f} records/s")
    return {
        "keys": keys,
        "records": keys,
        "ceiling_records_per_s": result["records_per_s"],
        "ceiling_rss_mb": proc.rss_mb,
        "ceiling_sqlite_mb": _megabytes(run.data_dir(label)),
    }


async def _point(
    run: Run, app: str, app_id: str, source: str, inputs: list[tuple[bytes, bytes]], keys: int
) -> dict[str, Any]:
    label = f"curve-{keys}-{app}"
    n = len(inputs)
    observer = await run.observe(run.name(f"{label}-out"))
    worker = run.worker(label, app, app_id, observer.topic, log_level="info", input_topic=source)
    timeout = _timeout(run, keys)
    try:
        try:
            figures = await run._timed(
                observer,
                [worker],
                label,
                alive=run._alive(worker),
                profile="outputs",
                n=n,
                timeout=timeout,
            )
        finally:
            await run._stop(worker)
            await observer.stop()
        figures.update(run._rate(observer, n, figures, worker))
        occurrences = Counter(key for key, _ in inputs)
        expected = _expected(inputs)
        figures.update(await run._read_back(label, observer.topic, expected))
    except BaseException:
        await observer.stop()
        raise
    restored = [(int(m[2]), float(m[4])) for m in RESTORED.finditer(worker.log())]
    applied = sum(r for r, _ in restored)
    if applied < keys:
        raise BenchError(f"{label}: the worker logged {applied:,} restored records of {keys:,}")
    data_dir = run.data_dir(label)
    files = sorted((data_dir / app_id).glob("*/counts.sqlite"))
    if app == "count":
        _check_files(label, files, keys, occurrences)
    seconds = max(s for _, s in restored)
    point = {
        "workload": app,
        "keys": keys,
        "records": n,
        **{k: figures[k] for k in ("records_per_s", "cpu_us_per_record", "ramp_s", "startup_s")},
        "restore_records_per_s": applied / seconds if seconds > 0 else math.nan,
        "restore_s": seconds,
        "rss_mb": worker.rss_mb,
        "rss_mb_restored": figures["rss_mb_before_first_output"],
        "sqlite_mb": _megabytes(data_dir),
        "outputs_checked": figures["outputs_checked"],
    }
    say(
        f"{label}: {point['records_per_s']:,.0f} records/s over {keys:,} keys "
        f"({point['cpu_us_per_record']:.1f} us of CPU per record); restored {applied:,} at "
        f"{point['restore_records_per_s']:,.0f}/s; peak RSS {point['rss_mb']:.0f} MB "
        f"({point['rss_mb_restored']:.0f} MB before the first output), "
        f"SQLite {point['sqlite_mb']:.0f} MB"
    )
    return point


def _expected(inputs: list[tuple[bytes, bytes]]) -> verify.Expected:
    """Each key's outputs: its restored count plus its payments so far (all payments
    fall in the restored window, for the windowed count too)."""
    seen: Counter[bytes] = Counter()
    out: verify.Expected = {}
    for key, _ in inputs:
        seen[key] += 1
        out.setdefault(key, []).append(base_count(key) + seen[key])
    return out


def _check_files(label: str, files: list[Path], keys: int, added: Counter[bytes]) -> None:
    """The count's state files hold every key once, with its changelog count plus the
    payments it counted since (`added`), and nothing else."""
    rows = 0
    wrong: list[tuple[bytes, int, int]] = []
    for path in files:
        for key, value in read_store(path).items():
            rows += 1
            want = base_count(key) + added[key]
            if int(value) != want and len(wrong) < 3:
                wrong.append((key, int(value), want))
    if rows != keys or wrong:
        raise BenchError(
            f"{label}: the state files hold {rows:,} keys for {keys:,}; wrong values "
            f"(key, file, expected): {wrong}"
        )


def _megabytes(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*.sqlite*")) / 2**20


def _timeout(run: Run, keys: int) -> float:
    """A restore of millions takes a while: a minute per million records beyond the
    usual phase timeout is far beyond any figure seen."""
    return run.cfg.phase_timeout_s + 60 * keys / 1_000_000
