"""The worker's web server (aiohttp, on the worker's own event loop).

It serves interactive queries (`/tables`, tables.py), read-only SQL (`/sql`,
sql.py), health (`/health/live`, `/health/ready`), the app's Prometheus metrics
(`/metrics`) and the app's own pages (`@app.page`). Errors a caller can act on are
answered as JSON `{"error": ...}` with their status (400, 404, 503 with
Retry-After); anything else is a 500 whose cause is logged here.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import NotAvailable, QueryError
from ..runtime.queries import LocalState
from .routing import Queries
from .sql import SqlRoutes
from .tables import TableRoutes, to_json

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("streamkit.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QueryError as exc:
        headers = {}
        if isinstance(exc, NotAvailable):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return web.json_response({"error": str(exc)}, status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)


def _page(fn: Callable[[web.Request], Awaitable[Any]]) -> Handler:
    """A user's page: an aiohttp response as it is, anything else as JSON."""

    async def handler(request: web.Request) -> web.StreamResponse:
        result = await fn(request)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(to_json(result))

    return handler


class WebServer:
    def __init__(self, app: App, queries: Queries, local: LocalState) -> None:
        self._app = app
        self._local = local
        settings = app.settings
        self._bind = settings.web_bind
        self._port = settings.web_port or 0
        self._host = settings.web_host or socket.gethostname()
        self._runner: web.AppRunner | None = None
        web_app = web.Application(middlewares=[_errors])
        router = web_app.router
        router.add_get("/health/live", self.live)
        router.add_get("/health/ready", self.ready)
        router.add_get("/metrics", self.metrics)
        TableRoutes(queries, local).add_to(router)
        SqlRoutes(app, queries, local).add_to(router)
        for path, fn in app.pages:
            router.add_route("*", path, _page(fn))
        self._web_app = web_app

    async def start(self) -> str:
        """Listen; return the `host:port` other workers and clients reach it by."""
        # A request in flight at shutdown gets a second, not aiohttp's minute: the
        # worker's own shutdown is bounded (runtime/worker.py).
        runner = web.AppRunner(
            self._web_app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._bind, self._port, reuse_address=True)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        endpoint = f"{self._host}:{port}"
        log.info("web server on http://%s (listening on %s:%d)", endpoint, self._bind, port)
        return endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def live(self, request: web.Request) -> web.Response:
        """The event loop answers: nothing blocks it."""
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        """Joined, and every task this worker owns restored and running."""
        ready, tasks = self._local.readiness()
        return web.json_response({"ready": ready, "tasks": tasks}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._app.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
