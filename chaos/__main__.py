"""`python -m chaos [--duration S] [--seed N] [--exactly-once] [--quick]`: see README.md.

Exit status 0 when nothing was lost and every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.procs import Processes, clean_up
from streamkit.devbroker import DevBroker

from .check import Verdict, check
from .driver import FAULTS, ChaosError, Driver, Options, Outcome

BROKER_ENV = "STREAMKIT_CHAOS_BROKER"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=None, help="the faults' random seed")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="input clicks per second")
    parser.add_argument("--exactly-once", action="store_true", help="workers run exactly_once")
    parser.add_argument(
        "--quick", action="store_true", help="each fault kind once, in order (the test's run)"
    )
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated faults to inject in this order (of {', '.join(FAULTS)})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (worker logs)")
    return parser.parse_args(argv)


def summary(outcome: Outcome, verdict: Verdict, options: Options) -> str:
    kinds = Counter(f.kind for f in outcome.faults)
    slowest = max(outcome.faults, key=lambda f: f.recovery_s, default=None)
    lines = [
        f"chaos summary ({'exactly_once' if options.exactly_once else 'at_least_once'}, "
        f"seed {options.seed}, {options.workers} workers, {options.rate} clicks/s)",
        "  faults: " + (", ".join(f"{k} {kinds[k]}" for k in FAULTS if kinds[k]) or "none"),
        f"  records in: {verdict.inputs} (produced {outcome.produced})",
    ]
    for name, o in verdict.outputs.items():
        lines.append(
            f"  {name:<9} out {o.records:>7}  lost {o.lost}  duplicates {o.duplicates}"
            + (f"  over the truth {len(o.over)}" if o.over else "")
            + (f"  WRONG {len(o.wrong)}" if o.wrong else "")
        )
    lines.append(
        f"  table: {len(verdict.table_below_truth)} keys below the truth, "
        f"{len(verdict.table_above_truth)} above; {verdict.windows} closed windows checked"
    )
    lines.append(f"  lost: {verdict.lost}   duplicates: {verdict.duplicates}")
    if slowest is not None:
        lines.append(
            f"  slowest recovery: {slowest.recovery_s:.1f} s ({slowest.kind} of {slowest.target})"
        )
    lines.append("  worker exits: " + ", ".join(f"{n} {c}" for n, c in outcome.exit_codes.items()))
    return "\n".join(lines)


async def run(options: Options, procs: Processes) -> tuple[Outcome, Verdict]:
    try:
        outcome = await Driver(options, procs).run()
    finally:
        procs.kill_all()
    verdict = await check(options.url, read_committed=options.exactly_once)
    return outcome, verdict


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(2), "big")
    workdir = Path(tempfile.mkdtemp(prefix="streamkit-chaos-"))
    procs = Processes(workdir)
    broker: DevBroker | None = None
    code = 1
    try:
        url = os.environ.get(BROKER_ENV, "").strip()
        if not url:
            broker = DevBroker(log_path=workdir / "broker.log").start()
            url = broker.url
        options = Options(
            url=url,
            workdir=workdir,
            duration_s=args.duration,
            seed=seed,
            workers=args.workers,
            rate=args.rate,
            exactly_once=args.exactly_once,
            broker_pid=None if broker is None else broker.pid,
            sequence=FAULTS if args.quick else tuple(args.faults.split(",")) if args.faults else (),
        )
        print(f"chaos: {url}, work dir {workdir}, seed {seed}", flush=True)
        outcome, verdict = asyncio.run(run(options, procs))
        print(summary(outcome, verdict, options))
        failures = verdict.failures(args.exactly_once) + outcome.problems
        for failure in failures:
            print(f"FAILED: {failure}")
        code = 1 if failures else 0
    except ChaosError as exc:
        print(f"chaos run failed: {exc}", file=sys.stderr)
        args.keep = True
    finally:
        clean_up(procs, broker, workdir, keep=args.keep or code != 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
