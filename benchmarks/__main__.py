"""`python -m benchmarks [--quick] [--only ...] [--profile]`: run, print, record.

Starts a Tansu dev broker (or uses `STREAMKIT_BENCH_BROKER=kafka://host:port`),
runs the workloads of `runs.py` against it, prints a table and writes
`benchmarks/results/latest.json` and `latest.png`. Every worker, ceiling and
broker process it started is stopped on the way out, errors and Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from streamkit.devbroker import DevBroker

from . import report
from .config import FULL, QUICK
from .kafka import BenchError
from .procs import Processes, clean_up
from .runs import WORKLOADS, Run, say

RESULTS = Path(__file__).resolve().parent / "results"
BROKER_ENV = "STREAMKIT_BENCH_BROKER"
WORKER_OPTIONS_ENV = "STREAMKIT_BENCH_WORKER_OPTIONS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="50,000 records and shorter runs (under 3 minutes)"
    )
    parser.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the passthrough and count workers with py-spy; prints self time by "
        "module; results/latest.* are left alone (profiled figures are slower)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help="override the record count (for profiling; figures then compare with nothing)",
    )
    parser.add_argument(
        "--curve-keys",
        default=None,
        help="comma-separated state sizes of the cost curve, e.g. 1000000 (an experiment)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, state)")
    args = parser.parse_args(argv)
    args.only_set = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = args.only_set - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; pick from {WORKLOADS}")
    return args


def start_broker(workdir: Path) -> tuple[str, str, DevBroker | None]:
    """(url, description, the broker we started or None)."""
    external = os.environ.get(BROKER_ENV, "").strip()
    if external:
        url = external if "://" in external else f"kafka://{external}"
        return url, f"{url} ({BROKER_ENV})", None
    broker = DevBroker(log_path=workdir / "broker.log")
    try:
        broker.start()
    except BaseException:
        broker.stop()
        raise
    return broker.url, "Tansu (streamkit.devbroker.DevBroker, memory storage)", broker


async def bench(
    args: argparse.Namespace, url: str, broker_name: str, workdir: Path, procs: Processes
) -> int:
    cfg = QUICK if args.quick else FULL
    if args.records:
        cfg = dataclasses.replace(
            cfg, mode=f"{cfg.mode}, {args.records} records", records=args.records
        )
    if args.curve_keys:
        sizes = tuple(int(k) for k in args.curve_keys.split(","))
        cfg = dataclasses.replace(cfg, mode=f"{cfg.mode}, curve {sizes}", curve_keys=sizes)
    extra = os.environ.get(WORKER_OPTIONS_ENV, "").strip()
    if extra:
        cfg = dataclasses.replace(cfg, worker_options=json.loads(extra))
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    host = report.machine()
    say(f"{cfg.mode} run on {url}; work dir {workdir}")
    profile_dir = None
    if args.profile:
        from . import profile

        profile.py_spy()
        profile_dir = workdir / "profiles"
        profile_dir.mkdir()
    run = Run(cfg, url, workdir, procs, uuid.uuid4().hex[:8], profile_dir)
    try:
        await run.all(args.only_set)
    finally:
        procs.kill_all()
    doc = report.build(cfg, run.results, run.notes, broker_name, host)
    print(report.table(doc))
    for summary in run.profiles.values():
        print(f"\n{summary}")
    experiment = args.profile or args.records or args.curve_keys or cfg.worker_options
    if experiment or args.only_set != set(WORKLOADS):
        say(
            "not a standard run (--only, --profile, --records, --curve-keys or worker "
            "options): "
            "results/ left alone"
        )
    else:
        # Quick runs too, as `make bench` promises; the committed file is a full run's
        # ("mode" says which), so a quick run shows up in `git diff`.
        report.write_json(doc, RESULTS / "latest.json")
        report.plot(doc, RESULTS / "latest.png")
        report.plot_curve(doc, RESULTS / "curve.png")
        say(f"wrote {RESULTS / 'latest.json'}, latest.png and curve.png ({cfg.mode} run)")
    if run.failures:
        args.keep = True
        print(f"benchmark failed: {', '.join(run.failures)} (above)", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM cleans up like Ctrl-C (inside the event loop, it cancels the run).
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="streamkit-bench-"))
    procs = Processes(workdir)
    broker: DevBroker | None = None
    atexit.register(procs.kill_all)  # the last resort; the finally below comes first
    code = 1
    try:
        url, broker_name, broker = start_broker(workdir)
        code = asyncio.run(bench(args, url, broker_name, workdir, procs))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        args.keep = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: stopping every process this run started", file=sys.stderr)
        code = 130
    finally:
        clean_up(procs, broker, workdir, keep=args.keep)
    return code


if __name__ == "__main__":
    sys.exit(main())
