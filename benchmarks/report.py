"""The report: a table on stdout, `results/latest.json`, and `results/latest.png`."""

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


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def build(
    cfg: Config, results: dict[str, Any], notes: list[str], broker: str, host: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: per workload its rate, its ceiling, their ratio, and the rest."""
    ceilings = results.get("ceilings", {})
    ceiling = {k: v["records_per_s"] for k, v in ceilings.items() if "records_per_s" in v}
    workloads: dict[str, Any] = {}
    if "passthrough" in results:
        r = results["passthrough"]
        workloads["passthrough"] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": ceiling.get("passthrough_model"),
            "ratio": _ratio(r["records_per_s"], ceiling.get("passthrough_model")),
            "ceiling_json_records_per_s": ceiling.get("passthrough_json"),
            "ratio_to_json_ceiling": _ratio(r["records_per_s"], ceiling.get("passthrough_json")),
            **{k: v for k, v in r.items() if k != "records_per_s"},
        }
    if "count" in results:
        r = results["count"]
        sqlite = ceilings.get("sqlite", {})
        workloads["count"] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": ceiling.get("count"),
            "ratio": _ratio(r["records_per_s"], ceiling.get("count")),
            "ratio_to_passthrough_ceiling": _ratio(
                r["records_per_s"], ceiling.get("passthrough_model")
            ),
            "startup_s": r["startup_s"],
            "rss_mb": r["rss_mb"],
            "cpu_cores": r.get("cpu_cores"),
            "runs_records_per_s": r.get("runs_records_per_s"),
            "sqlite_executemany_updates_per_s": sqlite.get("executemany_per_1000_updates_per_s"),
            "sqlite_writebehind_updates_per_s": sqlite.get("writebehind_per_10000_updates_per_s"),
        }
    if "restore" in results:
        r = results["restore"]
        workloads["restore"] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": ceiling.get("restore"),
            "ratio": _ratio(r["records_per_s"], ceiling.get("restore")),
            **{k: v for k, v in r.items() if k != "records_per_s"},
        }
    if "scaling" in results:
        r = results["scaling"]
        one = results.get("passthrough", {}).get("records_per_s")
        workloads["passthrough_2_workers"] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": None,
            "one_worker_records_per_s": one,
            "ratio": _ratio(r["records_per_s"], one),
            "startup_s": r["startup_s"],
            "rss_mb": r["rss_mb"],
            "cpu_cores": r.get("cpu_cores"),
            "runs_records_per_s": r.get("runs_records_per_s"),
            "join_pause_s": results.get("passthrough", {}).get("join_pause_s"),
        }
    if "processes" in results:
        r = results["processes"]
        one = results.get("passthrough", {}).get("records_per_s")
        workloads["passthrough_2_processes"] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": None,
            "one_worker_records_per_s": one,
            "ratio": _ratio(r["records_per_s"], one),
            **{k: v for k, v in r.items() if k != "records_per_s"},
        }
    for label, r in results.get("warmup_join", {}).items():
        # Not a throughput: the output gap of the tasks that moved to a joining worker.
        workloads[f"stateful_join_{label}"] = {
            "status": f"moved tasks' gap {r['moved_gap_s']:.2f} s, the rebalance's "
            f"{r['stayed_gap_s']:.2f} s, {r['restored_records']:,} records restored at the "
            "hand-over",
            **r,
        }
    for name in ("passthrough_dsl", "windowed_count", "stream_table_join"):
        if name not in results:
            continue
        r = results[name]
        # Compared with the passthrough's ceiling (no bare-library ceiling does windows or
        # joins; the DSL passthrough does exactly the passthrough's work).
        workloads[name] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": ceiling.get("passthrough_model"),
            "ratio": _ratio(r["records_per_s"], ceiling.get("passthrough_model")),
            "startup_s": r["startup_s"],
            "rss_mb": r["rss_mb"],
            "cpu_cores": r.get("cpu_cores"),
            "runs_records_per_s": r.get("runs_records_per_s"),
        }
    for name, base in (("passthrough_eos", "passthrough"), ("count_eos", "count")):
        if name not in results:
            continue
        r = results[name]
        at_least_once = results.get(base, {}).get("records_per_s")
        # The same app at-least-once, in the same run: what transactions cost.
        ratio = _ratio(r["records_per_s"], at_least_once)
        workloads[name] = {
            "records_per_s": r["records_per_s"],
            "ceiling_records_per_s": None,
            "at_least_once_records_per_s": at_least_once,
            "ratio": ratio,
            "ratio_to_at_least_once": ratio,
            **{k: v for k, v in r.items() if k != "records_per_s"},
        }
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": cfg.mode,
        "records": cfg.records,
        "keys": cfg.keys,
        "partitions": cfg.partitions,
        "broker": broker,
        "group_join_s": results.get("group_join_s"),
        "worker_kafka_options": cfg.worker_kafka_options(),
        "machine": host,
        "workloads": workloads,
        "ceilings": ceilings,
        "notes": notes,
    }
    doc["targets"] = targets(doc)
    return doc


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure it judges; `met` is None when unmeasured."""
    w = doc["workloads"]
    p, c, r, s, ce = (
        w.get(k, {})
        for k in ("passthrough", "count", "restore", "passthrough_2_workers", "count_eos")
    )
    join = doc.get("group_join_s")
    startups = [x["startup_s"] for x in (p, c) if x.get("startup_s") is not None]
    beyond = max(startups) - join if startups and join is not None else None
    rss = [x[k] for x in w.values() for k in ("rss_mb", "latency_rss_mb") if x.get(k) is not None]

    def target(name: str, value: float | None, limit: float, op: str) -> dict[str, Any]:
        met = None
        if value is not None:
            met = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
        return {"target": name, "value": value, "limit": limit, "met": met}

    procs, warm = w.get("passthrough_2_processes", {}), w.get("stateful_join_with_warmups", {})
    return [
        target("--processes 2 / one worker >= 1.6", procs.get("ratio"), 1.6, ">="),
        target(
            "stateful join with warm-ups: restore inside the hand-over gap, s <= 0.25",
            warm.get("restore_s"),
            0.25,
            "<=",
        ),
        target("passthrough >= 0.8 x its ceiling", p.get("ratio"), 0.8, ">="),
        target(
            "count >= 0.6 x the passthrough ceiling",
            c.get("ratio_to_passthrough_ceiling"),
            0.6,
            ">=",
        ),
        target("restore >= 0.7 x its ceiling", r.get("ratio"), 0.7, ">="),
        target("launch to first output, s beyond the group join <= 2", beyond, 2.0, "<="),
        target("p99 ms at 5,000 records/s < 50", p.get("p99_ms"), 50.0, "<"),
        target("peak worker RSS MB < 150", max(rss) if rss else None, 150.0, "<"),
        target("two workers / one >= 1.6", s.get("ratio"), 1.6, ">="),
        target(
            "exactly-once count >= 0.8 x at-least-once count",
            ce.get("ratio_to_at_least_once"),
            0.8,
            ">=",
        ),
    ]


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table(doc: dict[str, Any]) -> str:
    rows = [
        ("workload", "records/s", "ceiling/s", "ratio", "startup s", "p50 ms", "p99 ms", "RSS MB")
    ]
    for name, w in doc["workloads"].items():
        if "status" in w:
            rows.append((name, w["status"], "", "", "", "", "", ""))
            continue
        rows.append(
            (
                name,
                _fmt(w.get("records_per_s")),
                _fmt(w.get("ceiling_records_per_s")),
                _fmt(w.get("ratio"), ".2f"),
                _fmt(w.get("startup_s"), ".2f"),
                _fmt(w.get("p50_ms"), ".1f"),
                _fmt(w.get("p99_ms"), ".1f"),
                _fmt(w.get("rss_mb"), ".0f"),
            )
        )
    widths = [max(len(r[i]) for r in rows if r[2] or i == 0) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        if not row[2] and i:
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [row[0].ljust(widths[0])] + [c.rjust(widths[j + 1]) for j, c in enumerate(row[1:])]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * x for x in widths))
    out = ["\n".join(lines), ""]
    if any(name.endswith("_eos") for name in doc["workloads"]):
        out.append("*_eos: exactly-once; their ratio is to the same app at-least-once")
    out.append(
        f"{doc['mode']} run, {doc['records']:,} records, {doc['keys']:,} keys, "
        f"{doc['partitions']} partitions; broker {doc['broker']}; group join "
        f"{_fmt(doc.get('group_join_s'), '.2f')} s; {doc['machine']['cores']} cores, "
        f"Python {doc['machine']['python']}, load {doc['machine']['loadavg_at_start']}"
    )
    out.append("")
    out.append("targets:")
    for t in doc["targets"]:
        state = {True: "met    ", False: "MISSED ", None: "n/a    "}[t["met"]]
        out.append(f"  {state} {t['target']}: {_fmt(t['value'], '.2f')} (limit {t['limit']:g})")
    if doc["notes"]:
        out.append("")
        out.append("notes:")
        out.extend(f"  - {n}" for n in doc["notes"])
    return "\n".join(out)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (name, w["records_per_s"], w.get("ceiling_records_per_s"), w.get("ratio"))
        for name, w in doc["workloads"].items()
        if w.get("records_per_s") is not None
    ]
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    xs = range(len(bars))
    width = 0.38
    sk = ax.bar([x - width / 2 for x in xs], [b[1] for b in bars], width, label="streamkit")
    ax.bar(
        [x + width / 2 for x in xs],
        [b[2] or 0 for b in bars],
        width,
        label="bare-library ceiling (same broker, same data)",
    )
    for rect, (name, _, top, ratio) in zip(sk, bars, strict=True):
        if ratio is not None:
            what = "x ceiling" if top else "x 1 worker"
            if name.endswith("_eos"):
                what = "x at-least-once"
            ax.annotate(
                f"{ratio:.2f}{what}",
                (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(list(xs), [b[0].replace("_", " ") for b in bars], fontsize=8)
    ax.set_ylabel("records/s")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    p = doc["workloads"].get("passthrough", {})
    s = doc["workloads"].get("passthrough_2_workers", {})
    ax.set_title(
        f"streamkit vs bare libraries ({doc['mode']}, {doc['records']:,} records, "
        f"{doc['machine']['cores']} cores, {doc['date'][:10]})",
        fontsize=10,
    )
    extra = "   ".join(
        [
            f"passthrough p50/p99 at 5k/s: {_fmt(p.get('p50_ms'), '.1f')}/"
            f"{_fmt(p.get('p99_ms'), '.1f')} ms",
            f"startup {_fmt(p.get('startup_s'), '.2f')} s "
            f"(group join {_fmt(doc.get('group_join_s'), '.2f')} s)",
            f"2 workers / 1: {_fmt(s.get('ratio'), '.2f')}x, "
            f"join pause {_fmt(s.get('join_pause_s'), '.2f')} s",
        ]
    )
    top = max(max(b[1], b[2] or 0) for b in bars)
    ax.set_ylim(0, top * 1.2)
    ax.legend(loc="upper right", fontsize=8)
    fig.text(0.01, 0.01, extra, ha="left", va="bottom", fontsize=8, family="monospace")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
