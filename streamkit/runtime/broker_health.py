"""What a worker says when the broker goes away, comes back, or is not a broker.

aiokafka retries a lost broker by itself and logs an ERROR for every attempt of
every client: thousands of lines a minute that bury the one fact a user needs.
This module turns that into two lines of streamkit's own,

    broker 127.0.0.1:9092 unreachable since 10:41:07, retrying
    broker 127.0.0.1:9092 reachable again after 35 s (unreachable since 10:41:07)

with a reminder every REMIND_EVERY_S in between, and rate-limits aiokafka's
repeats (`RepeatFilter`). It also asks a broker, before anything else does, whether
it speaks Kafka at all (`probe`): a port where something else listens is reported
in words within seconds instead of after aiokafka's 40 s request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable

log = logging.getLogger("streamkit.broker")

# aiokafka's words for "could not talk to the broker" (client, conn, sender, fetcher).
_LOST_MARKS = (
    "Unable connect to",
    "Unable to update metadata",
    "Unable to request metadata",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "Connection at",
    "Failed fetch messages",
)
REPEAT_WINDOW_S = 30.0
REMIND_EVERY_S = 30.0
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 3.0


class RepeatFilter(logging.Filter):
    """Lets one aiokafka record of each kind through per REPEAT_WINDOW_S, then says how
    many it held back; notifies `on_lost` of every record that means a lost broker.

    Installed on the handlers (a logger's own filter does not see its children's
    records), it passes every other logger's records untouched.
    """

    def __init__(
        self,
        on_lost: Callable[[], None] = lambda: None,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.on_lost = on_lost
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        text = str(record.msg)
        if any(mark in text or mark in record.getMessage() for mark in _LOST_MARKS):
            self.on_lost()
        key = (record.name, text)
        now = self._clock()
        since, held = self._seen.get(key, (-self._window_s, 0))
        if now - since < self._window_s:
            self._seen[key] = (since, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{text} ({held} more like it in the last {now - since:.0f} s)"
        return True


class BrokerWatch:
    """One worker's view of whether its broker answers: a line when it stops, a line
    when it answers again, and a reminder in between."""

    def __init__(self, servers: list[str], label: str) -> None:
        self._servers = servers
        self._label = label
        self._lost_at: float | None = None  # time.time() of the first sign
        self._lost = asyncio.Event()
        self._job: asyncio.Task[None] | None = None

    @property
    def unreachable_since(self) -> float | None:
        return self._lost_at

    def lost(self) -> None:
        """A sign that the broker did not answer (from RepeatFilter; any thread-free caller)."""
        if self._lost_at is None:
            self._lost_at = time.time()
            log.warning(
                "broker %s unreachable since %s, retrying", self._label, _clock(self._lost_at)
            )
            self._lost.set()

    def start(self) -> None:
        self._job = asyncio.create_task(self._run(), name="broker watch")

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    async def _run(self) -> None:
        while True:
            await self._lost.wait()
            lost_at = self._lost_at
            assert lost_at is not None
            next_reminder = time.monotonic() + REMIND_EVERY_S
            while not await _answers(self._servers):
                if time.monotonic() >= next_reminder:
                    next_reminder += REMIND_EVERY_S
                    log.warning(
                        "broker %s unreachable since %s (%.0f s), retrying",
                        self._label,
                        _clock(lost_at),
                        time.time() - lost_at,
                    )
                await asyncio.sleep(PROBE_EVERY_S)
            log.warning(
                "broker %s reachable again after %.0f s (unreachable since %s)",
                self._label,
                time.time() - lost_at,
                _clock(lost_at),
            )
            self._lost_at = None
            self._lost.clear()


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


# Does it speak Kafka? ---------------------------------------------------------------

_API_VERSIONS = 18


def _api_versions_request(correlation_id: int) -> bytes:
    client_id = b"streamkit-probe"
    body = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


async def probe(server: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `server` (host:port) answers an ApiVersions request like a Kafka
    broker; otherwise what went wrong, in words."""
    host, _, port = server.rpartition(":")
    correlation_id = 0x5354_4B01
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return f"no connection to {server} within {timeout_s:g} s"
    except OSError as exc:
        return f"cannot connect to {server}: {exc.strerror or exc}"
    try:
        writer.write(_api_versions_request(correlation_id))
        async with asyncio.timeout(timeout_s):
            await writer.drain()
            head = await reader.readexactly(8)
    except TimeoutError:
        return (
            f"something listens on {server} but gave no Kafka answer within {timeout_s:g} s: "
            "is it a Kafka broker's port?"
        )
    except (asyncio.IncompleteReadError, OSError):
        return (
            f"something listens on {server} but closed the connection: is it a Kafka broker's port?"
        )
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    size, answered = struct.unpack(">ii", head)
    if answered != correlation_id or not 0 < size < 1 << 20:
        return (
            f"something listens on {server} but does not speak the Kafka protocol "
            f"(it answered {head!r}): is it a Kafka broker's port?"
        )
    return None


async def _answers(servers: list[str]) -> bool:
    for server in servers:
        if await probe(server, timeout_s=PROBE_EVERY_S) is None:
            return True
    return False
