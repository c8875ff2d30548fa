"""`/sql` and `streamkit sql`: read-only SQL over the app's state (docs/querying.md).

A query runs on its own aiosqlite connection, in aiosqlite's thread, never on the
event loop:

1. The statement is checked: one SELECT (or WITH ... SELECT); an authorizer then
   refuses anything but reading when it is prepared.
2. Each table the query names becomes a temporary relation on an in-memory
   database: `key`, `value` (a timestamped table's also `timestamp`, a windowed
   one's `window_start` and `window_end`) and `task`, filled from the state file
   of every task this worker runs, each attached read-only in turn, keys and
   values decoded by the table's serdes (functions registered on the
   connection): text and numbers as themselves, anything else as JSON text, so
   `value->>'page'` reads a model's field.
3. The query runs under a progress handler that interrupts it at the time limit;
   at most `max_rows` rows are kept (`truncated` says when there were more).
4. Across workers (`/sql` on any worker): each worker with tasks runs the query
   on its own state (`/internal/sql`), the answers are concatenated, and a
   top-level ORDER BY and LIMIT are applied again to the merged rows.

The files hold what the tasks committed (under at-least-once, what their last
commit flushed; under exactly-once, what committed transactions wrote, at most
about a second behind): SQL does not see changes a task still holds in its
write-behind cache, which `/tables` does.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import pydantic_core
from aiohttp import web

from ..errors import BadQuery
from ..runtime.queries import LocalState, Target
from ..state.timestamped import ValueAndTimestamp
from .routing import INTERNAL, Queries

if TYPE_CHECKING:
    from ..app import App

_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# How many SQLite VM steps pass between two looks at the clock.
_STEPS_PER_CHECK = 10_000
_SELECT = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


@dataclass
class Result:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    # Which worker read which tasks' files.
    workers: dict[str, list[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": pydantic_core.to_jsonable_python(self.rows, bytes_mode="base64"),
            "truncated": self.truncated,
            "workers": self.workers,
        }


def check_select(query: str) -> str:
    """1. One SELECT statement, or a 400 that says what is accepted."""
    text = query.strip().rstrip(";").strip()
    if not _SELECT.match(text):
        raise BadQuery("only SELECT queries are accepted (read-only SQL over the tables)")
    if not sqlite3.complete_statement(text + ";") or ";" in _outside_quotes(text):
        raise BadQuery("one SELECT statement at a time")
    return text


def _outside_quotes(text: str) -> str:
    """The text with quoted strings and identifiers blanked out, parentheses kept."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]", " ", text)


def _sql_value(value: Any) -> Any:
    """A decoded key or value as SQLite stores it: JSON text unless it is a scalar."""
    if value is None or isinstance(value, str | bytes | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    return pydantic_core.to_json(value, serialize_unknown=True).decode()


def _decoder(targets: Mapping[str, Target]) -> Any:
    """`sk_decode(table, part, bytes)`: part key, value, timestamp, start or end."""

    def decode(table: str, part: str, data: bytes) -> Any:
        target = targets[table]
        if part == "value":
            value = target.value_serde.deserialize(data)
            if isinstance(value, ValueAndTimestamp):
                return _sql_value(value.value)
            return _sql_value(value)
        if part == "timestamp":
            value = target.value_serde.deserialize(data)
            return value.timestamp if isinstance(value, ValueAndTimestamp) else None
        if target.windowed:
            key, start, end = target.store_key_serde.deserialize(data)
            return _sql_value({"key": key, "start": start, "end": end}[part])
        return _sql_value(target.key_serde.deserialize(data))

    return decode


def _columns(target: Target) -> list[tuple[str, str]]:
    """(column, expression over the attached file's kv row)."""
    name = target.name.replace("'", "''")
    columns = [("key", f"sk_decode('{name}', 'key', key)")]
    if target.windowed:
        columns += [
            ("window_start", f"sk_decode('{name}', 'start', key)"),
            ("window_end", f"sk_decode('{name}', 'end', key)"),
        ]
    columns.append(("value", f"sk_decode('{name}', 'value', value)"))
    if target.timestamped:
        columns.append(("timestamp", f"sk_decode('{name}', 'timestamp', value)"))
    return columns


def _named(query: str, targets: Mapping[str, Target]) -> list[Target]:
    """The tables a query names (bare or quoted); an unknown name is SQLite's to report."""
    text = query.lower()
    return [
        t
        for name, t in targets.items()
        if re.search(rf"(?<![\w.-]){re.escape(name.lower())}(?![\w-])", text)
    ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def run_local(
    local: LocalState, query: str, *, timeout_s: float, max_rows: int, worker: str
) -> Result:
    """Steps 2 and 3 on this worker's state files."""
    deadline = time.monotonic() + timeout_s
    tables = _named(query, local.targets)
    read: set[str] = set()
    db = await aiosqlite.connect("file::memory:", uri=True, isolation_level=None)
    try:
        await db.create_function("sk_decode", 3, _decoder(local.targets), deterministic=True)
        # 2. One temporary relation per table named, from every state file here.
        for target in tables:
            columns = _columns(target)
            await db.execute(
                f"CREATE TEMP TABLE {_quote(target.name)} "
                f"({', '.join(c for c, _ in columns)}, task)"
            )
            for task, path in local.state_files(target):
                read.add(task)
                await _copy(db, target, columns, task, path)
        # 3. The user's query: reading only, within the time left.
        await db.set_authorizer(lambda action, *_: 0 if action in _ALLOWED else 1)
        await db.set_progress_handler(lambda: int(time.monotonic() > deadline), _STEPS_PER_CHECK)
        try:
            async with db.execute(query) as cursor:
                rows = await cursor.fetchmany(max_rows + 1)
                names = [d[0] for d in cursor.description or ()]
        except sqlite3.DatabaseError as exc:
            if time.monotonic() > deadline:
                raise BadQuery(
                    f"the query ran longer than its limit (sql_timeout_s={timeout_s:g})"
                ) from None
            raise BadQuery(f"SQL error: {exc}") from None
    finally:
        await db.close()
    return Result(
        names,
        [list(r) for r in rows[:max_rows]],
        len(rows) > max_rows,
        {worker: sorted(read)},
    )


async def _copy(
    db: aiosqlite.Connection,
    target: Target,
    columns: Sequence[tuple[str, str]],
    task: str,
    path: Path,
) -> None:
    """One state file's rows into the table's relation; the file read-only."""
    uri = f"file:{path}?mode=ro"
    await db.execute("ATTACH DATABASE ? AS src", (uri,))
    try:
        await db.execute(
            f"INSERT INTO temp.{_quote(target.name)} "
            f"SELECT {', '.join(e for _, e in columns)}, ? FROM src.kv",
            (task,),
        )
    finally:
        await db.execute("DETACH DATABASE src")


def merge(query: str, results: Sequence[Result], max_rows: int) -> Result:
    """Step 4: concatenate the workers' rows, then the query's top-level ORDER BY and
    LIMIT again, on the merged rows (their output columns)."""
    columns = results[0].columns
    merged = Result(columns, [r for res in results for r in res.rows])
    merged.truncated = any(r.truncated for r in results)
    for res in results:
        merged.workers.update(res.workers)
    order, limit = _tail(query)
    if order is None and limit is None:
        merged.rows = merged.rows[:max_rows]
        return merged
    with sqlite3.connect(":memory:") as db:
        names = ", ".join(_quote(c) for c in columns)
        db.execute(f"CREATE TABLE merged ({names})")
        db.executemany(f"INSERT INTO merged VALUES ({', '.join('?' * len(columns))})", merged.rows)
        sql = "SELECT * FROM merged"
        if order is not None:
            sql += f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {limit}"
        try:
            merged.rows = [list(r) for r in db.execute(sql).fetchmany(max_rows)]
        except sqlite3.DatabaseError as exc:
            raise BadQuery(
                f"merging the workers' rows: {exc} (across workers, ORDER BY may use only "
                "the query's output columns)"
            ) from None
    return merged


_TAIL = re.compile(r"\bORDER\s+BY\b|\bLIMIT\b", re.IGNORECASE)


def _tail(query: str) -> tuple[str | None, str | None]:
    """The top-level ORDER BY terms and LIMIT clause of a query, if it has them."""
    blank = _outside_quotes(query)
    depth_at = []
    depth = 0
    for ch in blank:
        depth += ch == "("
        depth -= ch == ")"
        depth_at.append(depth)
    marks = [m for m in _TAIL.finditer(blank) if depth_at[m.start()] == 0]
    order = limit = None
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(query)
        text = query[m.end() : end].strip()
        if m.group(0).upper().startswith("ORDER"):
            order = text
        else:
            limit = text
    return order, limit


class SqlRoutes:
    def __init__(self, app: App, queries: Queries, local: LocalState) -> None:
        self._settings = app.settings
        self._queries = queries
        self._local = local

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/sql", self.sql)
        router.add_get(f"{INTERNAL}/sql", self.internal_sql)

    async def sql(self, request: web.Request) -> web.Response:
        query = check_select(request.query.get("q", ""))
        settings = self._settings
        others = self._queries.other_workers()
        answers = await asyncio.gather(
            self._here(query),
            *(
                self._queries.ask_worker(host, "sql", {"q": query}, settings.sql_timeout_s)
                for host in others
            ),
        )
        results = [answers[0]] + [Result(**a) for a in answers[1:]]
        if len(results) == 1:
            return web.json_response(results[0].as_json())
        return web.json_response(merge(query, results, settings.sql_max_rows).as_json())

    async def internal_sql(self, request: web.Request) -> web.Response:
        result = await self._here(check_select(request.query.get("q", "")))
        return web.json_response(result.as_json())

    async def _here(self, query: str) -> Result:
        settings = self._settings
        return await run_local(
            self._local,
            query,
            timeout_s=settings.sql_timeout_s,
            max_rows=settings.sql_max_rows,
            worker=self._queries.endpoint or "local",
        )
