"""`--profile`: py-spy samples a worker while it processes, and we sum self time.

py-spy (`pip install py-spy`) attaches to the running `streamkit worker` process
without changing it (`--nonblocking`: the worker is never paused). Its raw output
is one line per distinct stack, root first, with a sample count; the last frame
of a stack is where the time was spent ("self" time). Frames are grouped by where
their code lives: streamkit's own modules, aiokafka, the serde (pydantic, json),
the user's agent, sqlite3, the event loop, the rest.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
# First match wins. streamkit/serde.py only calls pydantic: its time is the serde's.
CATEGORIES = (
    ("user code (benchmarks/apps)", ("benchmarks/apps/",)),
    ("serde (pydantic, json)", ("streamkit/serde.py", "pydantic/", "pydantic_core/", "json/")),
    ("streamkit", ("streamkit/",)),
    ("aiokafka", ("aiokafka/",)),
    ("sqlite3", ("sqlite3/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/")),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def record_argv(pid: int, output: Path) -> list[str]:
    return [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "1000",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(output),
    ]


def category(path: str) -> str:
    for name, markers in CATEGORIES:
        if any(m in path for m in markers):
            return name
    return "other"


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["func"], match["file"]) if match else (frame, "?")


def summarize(raw: Path, title: str, top: int = 20) -> str:
    """Self time by category and the top functions by self time."""
    by_function: Counter[tuple[str, str]] = Counter()
    by_category: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_parse(f) for f in stack.split(";")]
        func, path = frames[-1]
        if path == "<string>" and len(frames) > 1:
            # Generated code (a dataclass __init__): it belongs to whoever calls it.
            caller, path = frames[-2]
            func = f"{func} called by {caller}"
        n = int(count)
        total += n
        by_function[(func, path)] += n
        by_category[category(path)] += n
    if not total:
        return f"{title}: no samples"
    lines = [f"{title}: {total} samples (busy time only), self time by where the code lives"]
    for name, n in by_category.most_common():
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    lines.append(f"top {top} functions by self time:")
    for (func, path), n in by_function.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {func}  ({_short(path)})  [{category(path)}]")
    return "\n".join(lines)
