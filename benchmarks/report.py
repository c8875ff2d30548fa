"""The report: a table on stdout, `results/latest.json`, and the plots beside it."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Config

# Workloads by their results key, as the report names them.
NAMES = {"scaling": "passthrough_2_workers", "processes": "passthrough_2_processes"}


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1]}


def build(
    cfg: Config, results: dict[str, Any], notes: list[str], broker: str, host: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: per workload its figures, its ceiling's, their ratio and spread."""
    workloads: dict[str, Any] = {}
    for name, r in results.items():
        if name == "warmup_join" and "failed" not in r:
            for label, join in r.items():
                # Not a throughput: the output gap of the tasks that moved to a joining worker.
                workloads[f"stateful_join_{label}"] = {
                    "status": f"moved tasks' gap {join['moved_gap_s']:.2f} s, the rebalance's "
                    f"{join['stayed_gap_s']:.2f} s, {join['restored_records']:,} records "
                    "restored at the hand-over",
                    **join,
                }
            continue
        if not isinstance(r, dict) or (name in ("latency", "curve") and "failed" not in r):
            continue
        w = dict(r)
        ceiling = w.get("ceiling")
        if ceiling is not None:
            w["ceiling_records_per_s"] = ceiling["records_per_s"]
            w["ceiling_runs_records_per_s"] = ceiling["runs_records_per_s"]
            w["ceiling_ramp_s"] = ceiling.get("ramp_s")
            w["ceiling_cpu_us_per_record"] = ceiling.get("cpu_us_per_record")
        workloads[NAMES.get(name, name)] = w
    one = workloads.get("passthrough")
    for name in ("passthrough_2_workers", "passthrough_2_processes"):
        two = workloads.get(name)
        if two is not None and one is not None and "failed" not in two and "failed" not in one:
            each = [
                a / b
                for a, b in zip(two["runs_records_per_s"], one["runs_records_per_s"], strict=False)
            ]
            two["ratio"], two["ratios"] = _spread(each), each
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": cfg.mode,
        "records": cfg.records,
        "keys": cfg.keys,
        "partitions": cfg.partitions,
        "repeats": cfg.repeats,
        "broker": broker,
        "group_join_s": results.get("group_join_s"),
        "worker_kafka_options": cfg.worker_kafka_options(),
        "machine": host,
        "workloads": workloads,
        "latency": results.get("latency"),
        "curve": results.get("curve"),
        "notes": notes,
    }
    doc["targets"] = targets(doc)
    return doc


def verdict(value: Any, limit: float, op: str) -> str | None:
    """ "met", "missed", or "within noise" when the run's spread straddles the limit
    (`value` a {median, min, max} spread or a single figure); None when unmeasured."""
    if value is None:
        return None
    low, high = (value["min"], value["max"]) if isinstance(value, dict) else (value, value)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    if op == ">=":
        good, bad = low >= limit, high < limit
    else:  # "<" or "<=": lower is better
        good = high < limit if op == "<" else high <= limit
        bad = low >= limit if op == "<" else low > limit
    return "met" if good else "missed" if bad else "within noise"


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure it judges and a verdict."""
    w = doc["workloads"]
    lat = doc.get("latency") or {}
    curve = doc.get("curve") or {}
    join = doc.get("group_join_s")
    startups = [w[k]["startup_s"] for k in ("passthrough", "count") if k in w]
    beyond = max(startups) - join if startups and join is not None else None
    rss = [x["rss_mb"] for x in w.values() if x.get("rss_mb") is not None]
    if lat.get("rss_mb") is not None:
        rss.append(lat["rss_mb"])

    def ratio(name: str) -> Any:
        return w.get(name, {}).get("ratio")

    rows: list[tuple[str, Any, float, str]] = [
        ("passthrough >= 0.85 x its fair ceiling", ratio("passthrough"), 0.85, ">="),
        (
            "passthrough, stream.batches() >= 0.85 x its fair ceiling",
            ratio("passthrough_batches"),
            0.85,
            ">=",
        ),
        ("count >= 0.8 x its fair ceiling", ratio("count"), 0.8, ">="),
        ("windowed count >= 0.7 x its ceiling", ratio("windowed_count"), 0.7, ">="),
        ("stream-table join >= 0.7 x its ceiling", ratio("stream_table_join"), 0.7, ">="),
        (
            f"restore ({doc['records']:,} records) >= 0.8 x its ceiling",
            ratio("restore"),
            0.8,
            ">=",
        ),
    ]
    for point in curve.get("restore", []):
        if point["records"] < 1_000_000:
            continue  # the 10,000-key point's restore takes a tenth of a second
        rows.append(
            (
                f"restore ({point['records']:,} records) >= 0.8 x its ceiling",
                point.get("ratio"),
                0.8,
                ">=",
            )
        )
    rows += [
        (
            "count at 1 million keys >= 0.6 x count at 10 thousand",
            curve.get("count_1m_over_10k"),
            0.6,
            ">=",
        ),
        ("peak RSS at 5 million keys < 250 MB", curve.get("peak_rss_mb_5m"), 250.0, "<"),
        ("launch to first output, s beyond the group join <= 2", beyond, 2.0, "<="),
        ("p99 ms at 5,000 records/s < 50", lat.get("p99_ms"), 50.0, "<"),
        ("peak worker RSS MB (10,000 keys) < 150", max(rss) if rss else None, 150.0, "<"),
        ("two workers / one >= 1.6", ratio("passthrough_2_workers"), 1.6, ">="),
        ("--processes 2 / one worker >= 1.6", ratio("passthrough_2_processes"), 1.6, ">="),
        (
            "stateful join with warm-ups: restore inside the hand-over gap, s <= 0.25",
            w.get("stateful_join_with_warmups", {}).get("restore_s"),
            0.25,
            "<=",
        ),
        ("exactly-once count >= 0.8 x at-least-once count", ratio("count_eos"), 0.8, ">="),
    ]
    return [
        {"target": name, "value": value, "limit": limit, "verdict": verdict(value, limit, op)}
        for name, value, limit, op in rows
    ]


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _range(values: list[float] | None, spec: str, scale: float = 1.0) -> str:
    if not values:
        return ""
    return f"{format(min(values) / scale, spec)}-{format(max(values) / scale, spec)}"


def _ratio_text(r: Any) -> str:
    if not isinstance(r, dict):
        return _fmt(r, ".2f")
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def table(doc: dict[str, Any]) -> str:
    rows = [
        (
            "workload",
            "records/s",
            "(runs, k)",
            "ceiling/s",
            "(runs, k)",
            "ratio (min-max)",
            "full speed s",
            "CPU us/rec",
            "startup s",
            "RSS MB",
            "outputs checked",
        )
    ]
    for name, w in doc["workloads"].items():
        if "failed" in w:
            rows.append((name, "FAILED", *[""] * 9))
            continue
        if "status" in w:
            continue  # below the table: not a throughput
        rows.append(
            (
                name,
                _fmt(w.get("records_per_s")),
                _range(w.get("runs_records_per_s"), ".0f", 1000),
                _fmt(w.get("ceiling_records_per_s")),
                _range(w.get("ceiling_runs_records_per_s"), ".0f", 1000),
                _ratio_text(w.get("ratio")),
                f"{_fmt(w.get('ramp_s'), '.2f')} ({_fmt(w.get('ceiling_ramp_s'), '.2f')})"
                if "ramp_s" in w
                else "",
                f"{_fmt(w.get('cpu_us_per_record'), '.1f')} "
                f"({_fmt(w.get('ceiling_cpu_us_per_record'), '.1f')})"
                if "cpu_us_per_record" in w
                else "",
                _fmt(w.get("startup_s"), ".2f"),
                _fmt(w.get("rss_mb"), ".0f"),
                _checked(w),
            )
        )
    out = [_columns(rows)]
    out.extend(f"{name}: {w['status']}" for name, w in doc["workloads"].items() if "status" in w)
    out.append("")
    out.append(
        "ratio: each run over its ceiling's run just before it (eos: over the at-least-once "
        "run of the same index; 2 workers: over 1 worker); full speed: seconds from the "
        "first output until the output rate reached 0.8 of the run's; CPU us/rec: the "
        "process's CPU time per record while it processed, which others' load moves less "
        "than the rate (the ceiling's in brackets)"
    )
    lat = doc.get("latency")
    if lat:
        out.append(
            f"latency at {lat['offered_records_per_s']:,}/s: p50 {lat['p50_ms']:.1f} ms, p99 "
            f"{lat['p99_ms']:.1f} ms (bare client {lat['ceiling_p50_ms']:.1f} / "
            f"{lat['ceiling_p99_ms']:.1f} ms); a second worker joining paused outputs for "
            f"{lat['join_pause_s']:.2f} s"
        )
    curve = doc.get("curve")
    if curve:
        out.append("")
        out.append(curve_table(curve))
    out.append(
        f"{doc['mode']} run, {doc['records']:,} records, {doc['keys']:,} keys, "
        f"{doc['partitions']} partitions, medians of {doc['repeats']}; broker {doc['broker']}; "
        f"group join {_fmt(doc.get('group_join_s'), '.2f')} s; {doc['machine']['cores']} cores, "
        f"Python {doc['machine']['python']}, load {doc['machine']['loadavg_at_start']}"
    )
    out.append("")
    out.append("targets (met: the whole spread of the run on the right side of the limit):")
    for t in doc["targets"]:
        state = {
            "met": "met         ",
            "missed": "MISSED      ",
            "within noise": "within noise",
            None: "n/a         ",
        }[t["verdict"]]
        value = t["value"]
        shown = _ratio_text(value) if isinstance(value, dict) else _fmt(value, ".2f")
        out.append(f"  {state} {t['target']}: {shown} (limit {t['limit']:g})")
    failed = {name: w["failed"] for name, w in doc["workloads"].items() if "failed" in w}
    if failed:
        out.append("")
        out.append("FAILED (their figures do not count):")
        out.extend(f"  - {name}: {why}" for name, why in failed.items())
    if doc["notes"]:
        out.append("")
        out.append("notes:")
        out.extend(f"  - {n}" for n in doc["notes"])
    return "\n".join(out)


def _checked(w: dict[str, Any]) -> str:
    if "outputs_checked" in w:
        dup = w.get("duplicates") or 0
        return f"{w['outputs_checked']:,}" + (f" ({dup:,} replayed)" if dup else "")
    if "keys_checked" in w:
        return f"{w['keys_checked']:,} keys"
    return ""


def curve_table(curve: dict[str, Any]) -> str:
    rows = [
        (
            "cost curve",
            "keys",
            "payments",
            "records/s",
            "CPU us/rec",
            "restore rec/s",
            "RSS MB",
            "SQLite MB",
        )
    ]
    for point in curve.get("points", []):
        rows.append(
            (
                point["workload"],
                f"{point['keys']:,}",
                f"{point['records']:,}",
                _fmt(point.get("records_per_s")),
                _fmt(point.get("cpu_us_per_record"), ".1f"),
                _fmt(point.get("restore_records_per_s")),
                _fmt(point.get("rss_mb"), ".0f"),
                _fmt(point.get("sqlite_mb"), ".1f"),
            )
        )
    for point in curve.get("restore", []):
        if point["records"] < 1_000_000:
            continue  # the 10,000-key point's restore takes a tenth of a second
        rows.append(
            (
                f"restore vs ceiling {_fmt(point.get('ratio'), '.2f')}",
                f"{point['keys']:,}",
                "",
                _fmt(point.get("ceiling_records_per_s")),
                "",
                _fmt(point.get("records_per_s")),
                _fmt(point.get("ceiling_rss_mb"), ".0f"),
                _fmt(point.get("ceiling_sqlite_mb"), ".1f"),
            )
        )
    return _columns(rows) + (
        "\n(restore rows: the ceiling's records/s, RSS and SQLite size, streamkit's "
        "restore records/s)"
    )


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Text columns: the first left-aligned, the others right-aligned, a rule below the head."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(widths[j + 1]) for j, c in enumerate(row[1:])]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * x for x in widths))
    return "\n".join(lines)


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if math.isnan(value) or math.isinf(value) else round(value, 4)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(doc), indent=2) + "\n")


def plot(doc: dict[str, Any], path: Path) -> None:
    """streamkit and its own ceiling per workload; each bar's whiskers span its runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(name, w) for name, w in doc["workloads"].items() if w.get("records_per_s") is not None]
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    xs = list(range(len(bars)))
    width = 0.38

    def whiskers(runs: list[float] | None, mid: float) -> list[float]:
        return [mid - min(runs), max(runs) - mid] if runs else [0.0, 0.0]

    sk_err = [whiskers(w.get("runs_records_per_s"), w["records_per_s"]) for _, w in bars]
    ce_err = [
        whiskers(w.get("ceiling_runs_records_per_s"), w.get("ceiling_records_per_s") or 0)
        for _, w in bars
    ]
    sk = ax.bar(
        [x - width / 2 for x in xs],
        [w["records_per_s"] for _, w in bars],
        width,
        yerr=list(zip(*sk_err, strict=True)),
        capsize=3,
        label="streamkit (median of the runs; whiskers: their range)",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [w.get("ceiling_records_per_s") or 0 for _, w in bars],
        width,
        yerr=list(zip(*ce_err, strict=True)),
        capsize=3,
        label="its ceiling: the fastest bare program for the same job",
    )
    for rect, (name, w) in zip(sk, bars, strict=True):
        r = w.get("ratio")
        if isinstance(r, dict):
            what = "x at-least-once" if name.endswith("_eos") else "x"
            if name == "passthrough_2_workers":
                what = "x 1 worker"
            ax.annotate(
                f"{r['median']:.2f}{what}\n({r['min']:.2f}-{r['max']:.2f})",
                (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(xs, [name.replace("_", "\n") for name, _ in bars], fontsize=8)
    ax.set_ylabel("records/s")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax.set_title(
        f"streamkit vs the fair ceilings ({doc['mode']}, {doc['records']:,} records, "
        f"medians of {doc['repeats']}, {doc['machine']['cores']} cores, {doc['date'][:10]})",
        fontsize=10,
    )
    top = max(
        max(
            max(w.get("runs_records_per_s") or [0]), max(w.get("ceiling_runs_records_per_s") or [0])
        )
        for _, w in bars
    )
    ax.set_ylim(0, top * 1.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_curve(doc: dict[str, Any], path: Path) -> None:
    """The cost curve: records/s, the restore's records/s and memory against state size."""
    curve = doc.get("curve")
    if not curve or not curve.get("points"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, restore, memory) = plt.subplots(1, 3, figsize=(13, 4.2), dpi=110)
    for app, marker in (("count", "o"), ("windowed_count", "s")):
        points = [p for p in curve["points"] if p["workload"] == app]
        keys = [p["keys"] for p in points]
        rate.plot(keys, [p["records_per_s"] for p in points], marker=marker, label=app)
        memory.plot(keys, [p["rss_mb"] for p in points], marker=marker, label=f"{app}: peak RSS")
        memory.plot(
            keys,
            [p["sqlite_mb"] for p in points],
            marker=marker,
            linestyle=":",
            label=f"{app}: SQLite files",
        )
    restores = curve.get("restore", [])
    sizes = [r["records"] for r in restores]
    restore.plot(sizes, [r["records_per_s"] for r in restores], marker="o", label="streamkit")
    restore.plot(sizes, [r["ceiling_records_per_s"] for r in restores], marker="^", label="ceiling")
    memory.axhline(250, color="grey", linewidth=0.8, linestyle="--")
    thousands = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k")
    for ax, title, ylabel in (
        (rate, f"{curve['points'][0]['records']:,} payments over the keys", "records/s"),
        (restore, "restore of a changelog (one record per key)", "records/s"),
        (memory, "memory and disk (dashed: the 250 MB target)", "MB"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("keys in the table" if ax is not restore else "changelog records")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        if ylabel == "records/s":
            ax.yaxis.set_major_formatter(thousands)
    fig.suptitle(
        f"streamkit as state grows ({doc['mode']}, {doc['machine']['cores']} cores, "
        f"{doc['date'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
