"""The README's tour, run as written: its code blocks, in a fresh directory, in bash.

The one liberty taken: the broker's port 9092 becomes a free one, so that the
test cannot meet another broker on this machine. The first terminal's block runs
until its address is printed (as a reader waits for it), the second terminal's
block to its end, and what it prints must be what the README says it prints.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.timeout(120)


def tour_blocks() -> tuple[str, list[str], str]:
    """(clicks.py, the bash blocks in order, the expected output) of the tour section."""
    text = README.read_text()
    tour = text[text.index("## A five-minute tour") :]
    tour = tour[: tour.index("\n## ", 1)]
    blocks = re.findall(r"```(\w+)\n(.*?)```", tour, re.DOTALL)
    python = [body for lang, body in blocks if lang == "python"]
    shells = [body for lang, body in blocks if lang == "bash"]
    output = [body for lang, body in blocks if lang == "text"]
    assert len(python) == 1 and len(output) == 1 and len(shells) >= 2, blocks
    return python[0], shells, output[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readme_tour_prints_what_the_readme_says(tmp_path: Path) -> None:
    clicks, shells, expected = tour_blocks()
    broker_block, feed_block = shells[0], shells[1]
    port = str(free_port())
    (tmp_path / "clicks.py").write_text(clicks)
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the environment `make run` made
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env["PYTHONUNBUFFERED"] = "1"

    broker = subprocess.Popen(
        ["bash", "-c", broker_block.replace("9092", port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert broker.stdout is not None
        first = broker.stdout.readline()  # blocks until the broker says where it is
        assert first.startswith(f"kafka://127.0.0.1:{port}"), first
        began = time.monotonic()
        run = subprocess.run(
            ["bash", "-c", feed_block.replace("9092", port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - began
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        broker.wait(timeout=20)
    assert run.returncode == 0, run.stderr
    printed = run.stdout.splitlines()
    wanted = expected.replace("9092", port).splitlines()
    assert sorted(printed) == sorted(wanted), run.stderr
    for user in ("ada", "grace"):  # one user's counts in order
        assert [p for p in printed if p.startswith(user)] == [
            w for w in wanted if w.startswith(user)
        ]
    assert "worker stopped cleanly" in run.stderr
    assert "Traceback" not in run.stderr
    print(f"the tour's second block took {took:.1f} s")
