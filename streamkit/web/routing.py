"""Queries from anywhere in a worker: answered here, or forwarded to the owner.

`Queries` is what `app.query` and the `/tables` routes call. A key of a global
table, or of a task this worker runs, is read here (runtime/queries.py); any other
key is asked of the worker the last assignment names as its task's owner, over
HTTP, in one hop: the receiver answers from its own state (`/internal/...`) and
never forwards again. Keys and values cross between workers as their serialized
bytes (base64), so every worker hands its callers the table's own Python values.

A range is asked of every worker holding some of the table's tasks at once, each
returning its first rows in byte order of the serialized keys; the merge keeps the
first `limit`, and the next page starts after the last key returned.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..errors import BadQuery, NotAvailable, QueryError
from ..runtime.queries import RETRY_AFTER_S, LocalState, Read, Row, Target
from ..state.timestamped import ValueAndTimestamp
from ..topology import TaskId

if TYPE_CHECKING:
    import aiohttp

# A request one worker makes of another; never forwarded again.
INTERNAL = "/internal"
# Rows a whole-range query asks for at a time.
PAGE = 1000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.encode())
    except ValueError:
        raise BadQuery(f"{what} {text!r} is not base64url") from None


@dataclass(frozen=True)
class Answer:
    """A query's answer, and which worker and task gave it."""

    table: str
    found: bool
    # The stored value (a windows query: its (start, end, value) rows); a timestamped
    # table's value without its timestamp, which is in `timestamp`.
    value: Any
    timestamp: int | None
    task: str | None
    # `host:port` of the worker that answered; "local" when it was this one and it
    # serves no web port.
    worker: str
    # Changelog records the answering copy was behind its active task (stale: a standby).
    lag: int = 0
    stale: bool = False


@dataclass(frozen=True)
class Page:
    rows: list[tuple[Any, Any]]
    # Where the next page starts (after this key's bytes); None: this was the last.
    next: str | None


class Queries:
    def __init__(self, local: LocalState, endpoint: str | None, forward_timeout_s: float) -> None:
        self.local = local
        self.endpoint = endpoint
        self._timeout_s = forward_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def key_bytes(self, target: Target, key: Any) -> bytes:
        try:
            kb = target.key_serde.serialize(key)
        except Exception as exc:
            raise BadQuery(
                f"table {target.name!r}: key {key!r} does not serialize: {exc}"
            ) from None
        if kb is None:
            raise BadQuery(f"table {target.name!r}: keys cannot be None")
        return kb

    # One key ----------------------------------------------------------------------

    async def get(self, target: Target, key_bytes: bytes, *, stale_ok: bool = False) -> Answer:
        hosts = self._hosts(target, key_bytes, stale_ok)
        if not hosts:
            read = await self.local.get(target, key_bytes, stale_ok=stale_ok)
            return self._answer(target, read, read.value, self.endpoint or "local")
        params = {"table": target.name, "key": b64(key_bytes), "stale_ok": str(stale_ok).lower()}
        host, data = await self._ask_first(hosts, "get", params)
        value = None
        if data["found"]:
            value = target.value_serde.deserialize(unb64(data["value"], "value"))
        read = Read(data["found"], value, _task(data["task"]), data["lag"], data["stale"])
        return self._answer(target, read, value, host)

    async def windows(
        self, target: Target, key_bytes: bytes, time_from: int, time_to: int, *, stale_ok: bool
    ) -> Answer:
        hosts = self._hosts(target, key_bytes, stale_ok)
        if not hosts:
            rows, read = await self.local.windows(
                target, key_bytes, time_from, time_to, stale_ok=stale_ok
            )
            plain_rows = [(s, e, _plain(v)) for s, e, v in rows]
            return self._answer(target, read, plain_rows, self.endpoint or "local")
        params = {
            "table": target.name,
            "key": b64(key_bytes),
            "from": str(time_from),
            "to": str(time_to),
            "stale_ok": str(stale_ok).lower(),
        }
        host, data = await self._ask_first(hosts, "windows", params)
        deserialize = target.value_serde.deserialize
        rows = [(s, e, _plain(deserialize(unb64(v, "value")))) for s, e, v in data["rows"]]
        read = Read(bool(rows), None, _task(data["task"]), data["lag"], data["stale"])
        return self._answer(target, read, rows, host)

    def _hosts(self, target: Target, key_bytes: bytes, stale_ok: bool) -> list[str]:
        """Where to ask, in order; empty: here."""
        if target.subtopology is None:
            return []  # every worker holds a global table whole
        task = target.task_of(key_bytes)
        local = self.local
        if local.runs(task) or (stale_ok and local.keeps_standby(task)):
            return []
        return self._remote_hosts(target, task, stale_ok)

    def _remote_hosts(self, target: Target, task: TaskId, stale_ok: bool) -> list[str]:
        owner = self.local.owner(task)
        hosts = [] if owner is None or owner == self.endpoint else [owner]
        if stale_ok:
            hosts += [h for h in self.local.standby_hosts(task) if h != self.endpoint]
        if not hosts:
            raise NotAvailable(
                f"no worker that serves queries owns task {task} of table {target.name!r} "
                "now (a rebalance may be under way, or its worker runs no web server)",
                retry_after_s=RETRY_AFTER_S,
            )
        return hosts

    def _answer(self, target: Target, read: Read, value: Any, worker: str) -> Answer:
        timestamp = None
        if isinstance(value, ValueAndTimestamp):
            value, timestamp = value.value, value.timestamp
        return Answer(
            target.name,
            read.found,
            value,
            timestamp,
            None if read.task is None else str(read.task),
            worker,
            read.lag,
            read.stale,
        )

    # Ranges -------------------------------------------------------------------------

    async def range(
        self,
        target: Target,
        low: bytes | None,
        high: bytes | None,
        *,
        after: bytes | None = None,
        limit: int,
        stale_ok: bool = False,
    ) -> Page:
        """Keys in [low, high) after `after` across every partition, `limit` at most."""
        if after is not None and (low is None or after >= low):
            low = after + b"\x00"  # the first byte string after `after`
        rows = await self._scan(target, low, high, limit + 1, stale_ok)
        more = len(rows) > limit
        rows = rows[:limit]
        key_of, unwrap = target.key_serde.deserialize, _plain
        return Page(
            [(key_of(kb), unwrap(v)) for kb, v in rows],
            b64(rows[-1][0]) if more else None,
        )

    async def range_all(
        self,
        target: Target,
        low: bytes | None,
        high: bytes | None,
        *,
        limit: int | None,
        stale_ok: bool = False,
    ) -> list[tuple[Any, Any]]:
        """Every key in [low, high), page after page; the first `limit` if given."""
        rows: list[tuple[Any, Any]] = []
        after = None
        while limit is None or len(rows) < limit:
            want = PAGE if limit is None else min(PAGE, limit - len(rows))
            page = await self.range(target, low, high, after=after, limit=want, stale_ok=stale_ok)
            rows.extend(page.rows)
            if page.next is None:
                break
            after = unb64(page.next, "cursor")
        return rows

    async def _scan(
        self, target: Target, low: bytes | None, high: bytes | None, limit: int, stale_ok: bool
    ) -> list[Row]:
        if target.windowed:
            raise BadQuery(
                f"table {target.name!r} is windowed: ask for a key's windows "
                f"(/tables/{target.name}/KEY/windows)"
            )
        if target.subtopology is None:
            return await self.local.scan(target, (), low, high, limit)
        here: list[TaskId] = []
        remote: dict[str, list[TaskId]] = {}
        for task in target.tasks():
            if self.local.runs(task) or (stale_ok and self.local.keeps_standby(task)):
                here.append(task)
            else:
                remote.setdefault(self._remote_hosts(target, task, False)[0], []).append(task)

        async def ask(host: str, tasks: list[TaskId]) -> list[Row]:
            params = {
                "table": target.name,
                "tasks": ",".join(str(t) for t in tasks),
                "limit": str(limit),
                "stale_ok": str(stale_ok).lower(),
            }
            if low is not None:
                params["low"] = b64(low)
            if high is not None:
                params["high"] = b64(high)
            _, data = await self._ask_first([host], "scan", params)
            deserialize = target.value_serde.deserialize
            return [(unb64(k, "key"), deserialize(unb64(v, "value"))) for k, v in data["rows"]]

        pages = await asyncio.gather(
            self.local.scan(target, here, low, high, limit, stale_ok=stale_ok),
            *(ask(host, tasks) for host, tasks in sorted(remote.items())),
        )
        return list(islice(heapq.merge(*pages, key=lambda row: row[0]), limit))

    def other_workers(self) -> list[str]:
        return [h for h in self.local.endpoints() if h != self.endpoint]

    async def ask_worker(
        self, host: str, op: str, params: Mapping[str, str], busy_s: float
    ) -> dict[str, Any]:
        """Another worker's own answer to `op`, which may take `busy_s` beyond the
        forwarding timeout (a SQL query's time limit)."""
        return await self._ask(host, op, params, self._timeout_s + busy_s)

    # Forwarding ------------------------------------------------------------------------

    async def _ask_first(
        self, hosts: list[str], op: str, params: Mapping[str, str]
    ) -> tuple[str, dict[str, Any]]:
        """The first host's answer that is not a NotAvailable; the last one otherwise."""
        failure: NotAvailable | None = None
        for host in hosts:
            try:
                return host, await self._ask(host, op, params)
            except NotAvailable as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _ask(
        self, host: str, op: str, params: Mapping[str, str], timeout_s: float | None = None
    ) -> dict[str, Any]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"http://{host}{INTERNAL}/{op}"
        timeout_s = timeout_s or self._timeout_s
        try:
            async with self._session.get(
                url, params=params, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                data = await response.json(content_type=None)
                status = response.status
                retry = response.headers.get("Retry-After")
        except TimeoutError:
            raise NotAvailable(
                f"worker {host} did not answer within {timeout_s:g} s",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise NotAvailable(
                f"worker {host} could not be asked: {exc or type(exc).__name__}",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        if status == 200:
            return dict(data)
        said = data.get("error", status) if isinstance(data, dict) else status
        message = f"worker {host}: {said}"
        if status == NotAvailable.status:
            raise NotAvailable(message, retry_after_s=float(retry or RETRY_AFTER_S))
        error = QueryError(message)
        error.status = status
        raise error


def _task(name: str | None) -> TaskId | None:
    if name is None:
        return None
    sub, partition = name.split("_")
    return TaskId(int(sub), int(partition))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, ValueAndTimestamp) else value
