"""`/tables`: interactive queries over HTTP, JSON out (docs/querying.md).

Public routes parse keys with the table's key type and answer with the table's
values as JSON; `/internal/...` routes are what one worker asks of another when it
forwards a query (routing.py): keys and values as base64 of their serialized
bytes, answered from this worker's own state only.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
from aiohttp import web

from ..errors import BadQuery
from ..runtime.queries import LocalState, Target
from ..serde import JsonSerde, TypeAdapterSerde
from .routing import INTERNAL, Answer, Queries, b64, unb64

# Rows of a range page when the request names no limit, and the most it may name.
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def to_json(value: Any) -> Any:
    """A table's key or value as JSON: models as objects, anything unknown as text."""
    return pydantic_core.to_jsonable_python(value, serialize_unknown=True)


def parse_key(target: Target, text: str) -> bytes:
    """A key from a URL, read as the table's key type; its serialized bytes.

    The text itself is tried first (str, int, float, bytes keys, and JSON for model
    keys); a JSON-typed key that is not JSON is tried as a JSON string.
    """
    serde = target.key_serde
    tries = [text.encode()]
    if isinstance(serde, JsonSerde | TypeAdapterSerde):
        tries.append(json.dumps(text).encode())
    problem = ""
    for raw in tries:
        try:
            kb = serde.serialize(serde.deserialize(raw))
        except Exception as exc:
            problem = problem or f": {str(exc).splitlines()[0]}"
            continue
        if kb is not None:
            return kb
    name = getattr(target.key_type, "__name__", None) or type(serde).__name__
    raise BadQuery(f"table {target.name!r} has keys of type {name}; {text!r} is not one{problem}")


def flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise BadQuery(f"{name} must be true or false, got {text!r}")
    return text in ("true", "1")


def number(request: web.Request, name: str, default: int | None = None) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {text!r}") from None


class TableRoutes:
    def __init__(self, queries: Queries, local: LocalState) -> None:
        self.queries = queries
        self.local = local

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/tables", self.list_tables)
        router.add_get("/tables/{table}", self.range)
        router.add_get("/tables/{table}/{key}", self.get)
        router.add_get("/tables/{table}/{key}/windows", self.windows)
        router.add_get(f"{INTERNAL}/get", self.internal_get)
        router.add_get(f"{INTERNAL}/scan", self.internal_scan)
        router.add_get(f"{INTERNAL}/windows", self.internal_windows)

    # Public ---------------------------------------------------------------------------

    async def list_tables(self, request: web.Request) -> web.Response:
        tables = [
            {
                "name": t.name,
                "kind": _kind(t),
                "key_type": getattr(t.key_type, "__name__", str(t.key_type)),
                "partitions": t.partitions,
            }
            for t in sorted(self.local.targets.values(), key=lambda t: t.name)
        ]
        return web.json_response({"tables": tables})

    async def get(self, request: web.Request) -> web.Response:
        target = self.local.target(request.match_info["table"])
        text = request.match_info["key"]
        kb = parse_key(target, text)
        answer = await self.queries.get(target, kb, stale_ok=flag(request, "stale_ok"))
        key = to_json(target.key_serde.deserialize(kb))
        body: dict[str, Any] = {"table": target.name, "key": key, **_where(answer)}
        if not answer.found:
            body["error"] = f"no key {text!r} in table {target.name!r}"
            return web.json_response(body, status=404)
        body["value"] = to_json(answer.value)
        if answer.timestamp is not None:
            body["timestamp"] = answer.timestamp
        return web.json_response(body)

    async def range(self, request: web.Request) -> web.Response:
        target = self.local.target(request.match_info["table"])
        low, high = (
            parse_key(target, request.query[name]) if request.query.get(name) else None
            for name in ("from", "to")
        )
        limit = number(request, "limit", DEFAULT_LIMIT)
        assert limit is not None
        if not 0 < limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
        cursor = request.query.get("cursor")
        page = await self.queries.range(
            target,
            low,
            high,
            after=None if not cursor else unb64(cursor, "cursor"),
            limit=limit,
            stale_ok=flag(request, "stale_ok"),
        )
        rows = [{"key": to_json(k), "value": to_json(v)} for k, v in page.rows]
        return web.json_response({"table": target.name, "rows": rows, "next": page.next})

    async def windows(self, request: web.Request) -> web.Response:
        target = self.local.target(request.match_info["table"])
        kb = parse_key(target, request.match_info["key"])
        time_from = number(request, "from", 0)
        time_to = number(request, "to", 2**62)
        assert time_from is not None and time_to is not None
        answer = await self.queries.windows(
            target, kb, time_from, time_to, stale_ok=flag(request, "stale_ok")
        )
        windows = [{"start": s, "end": e, "value": to_json(v)} for s, e, v in answer.value]
        key = to_json(target.key_serde.deserialize(kb))
        body = {"table": target.name, "key": key, "windows": windows, **_where(answer)}
        return web.json_response(body)

    # Internal: one worker asks another ------------------------------------------------

    async def internal_get(self, request: web.Request) -> web.Response:
        target = self.local.target(request.query.get("table", ""))
        kb = unb64(request.query.get("key", ""), "key")
        read = await self.local.get(target, kb, stale_ok=flag(request, "stale_ok"))
        value = b64(target.value_serde.serialize(read.value) or b"") if read.found else None
        return web.json_response(
            {
                "found": read.found,
                "value": value,
                "task": None if read.task is None else str(read.task),
                "lag": read.lag,
                "stale": read.stale,
            }
        )

    async def internal_scan(self, request: web.Request) -> web.Response:
        target = self.local.target(request.query.get("table", ""))
        tasks = [t for t in target.tasks() if str(t) in request.query.get("tasks", "").split(",")]
        low, high = (
            unb64(request.query[name], name) if name in request.query else None
            for name in ("low", "high")
        )
        rows = await self.local.scan(
            target,
            tasks,
            low,
            high,
            number(request, "limit", MAX_LIMIT) or MAX_LIMIT,
            stale_ok=flag(request, "stale_ok"),
        )
        serialize = target.value_serde.serialize
        return web.json_response({"rows": [[b64(k), b64(serialize(v) or b"")] for k, v in rows]})

    async def internal_windows(self, request: web.Request) -> web.Response:
        target = self.local.target(request.query.get("table", ""))
        kb = unb64(request.query.get("key", ""), "key")
        rows, read = await self.local.windows(
            target,
            kb,
            number(request, "from", 0) or 0,
            number(request, "to", 2**62) or 0,
            stale_ok=flag(request, "stale_ok"),
        )
        serialize = target.value_serde.serialize
        return web.json_response(
            {
                "rows": [[s, e, b64(serialize(v) or b"")] for s, e, v in rows],
                "task": None if read.task is None else str(read.task),
                "lag": read.lag,
                "stale": read.stale,
            }
        )


def _where(answer: Answer) -> dict[str, Any]:
    """Which worker and task answered, and how stale its copy was."""
    return {"task": answer.task, "worker": answer.worker, "stale": answer.stale, "lag": answer.lag}


def _kind(target: Target) -> str:
    return "global" if target.subtopology is None else "windowed" if target.windowed else "table"
