"""The HTTP control of a `--processes` supervisor, and how `streamkit scale` finds it.

The supervisor serves `GET /processes` (the count and the running children) and
`PUT /processes` with `{"processes": N}` on 127.0.0.1, from a thread of the
stdlib's `http.server` that calls into the supervisor's event loop. Its address
goes to `{state_dir}/.supervisor/control.json`, next to the lock that keeps a
second supervisor off the same data dir; `read_control` finds it only while a
supervisor holds that lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..state.task_dir_lock import TaskDirLock

log = logging.getLogger("streamkit.supervisor")

CONTROL_DIR = ".supervisor"
CONTROL_FILE = "control.json"


def control_dir(state_dir: Path) -> Path:
    """Where a supervisor of the app with this state directory leaves its address."""
    return state_dir / CONTROL_DIR


def serve_control(
    state_dir: Path,
    port: int,
    loop: asyncio.AbstractEventLoop,
    describe: Callable[[], dict[str, Any]],
    scale_to: Callable[[int, str], None],
) -> ThreadingHTTPServer:
    """Serve the control on 127.0.0.1:`port` (0: any free port); write its address."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/processes":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "try /processes"})
            self._reply(HTTPStatus.OK, _on_loop(loop, describe))

        def do_PUT(self) -> None:
            if self.path.rstrip("/") != "/processes":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "try /processes"})
            try:
                size = int(self.headers.get("Content-Length", "0"))
                wanted = json.loads(self.rfile.read(size))["processes"]
                if not isinstance(wanted, int) or wanted < 1:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                return self._reply(
                    HTTPStatus.BAD_REQUEST, {"error": 'send {"processes": N}, N >= 1'}
                )
            before = _on_loop(loop, describe)["processes"]
            loop.call_soon_threadsafe(scale_to, wanted, "asked over HTTP")
            self._reply(HTTPStatus.OK, {"processes": wanted, "was": before})

        do_POST = do_PUT

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    host, bound = server.server_address[:2]
    control = {"pid": os.getpid(), "url": f"http://{host}:{bound}"}
    (control_dir(state_dir) / CONTROL_FILE).write_text(json.dumps(control))
    log.info("control: %s/processes (streamkit scale, SIGTTIN, SIGTTOU)", control["url"])
    return server


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> Any:
    """Call `fn` on the loop from another thread and return its result."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=5)


def read_control(state_dir: Path) -> dict[str, Any] | None:
    """The running supervisor's control file, or None when no supervisor holds its lock."""
    lock = TaskDirLock(control_dir(state_dir))
    if lock.try_acquire():
        lock.release()
        return None
    try:
        control: dict[str, Any] = json.loads((control_dir(state_dir) / CONTROL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return control
