"""URL parsing and the client options every aiokafka client of a worker shares."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import codec
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.helpers import create_ssl_context

from ...errors import ConfigError, TransportError
from ..offset_reset import POLICIES

log = logging.getLogger(__name__)

T = TypeVar("T")

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSION_TYPES = (None, "gzip", "snappy", "lz4", "zstd")
_ISOLATION_LEVELS = ("read_uncommitted", "read_committed")


def parse_kafka_url(url: str) -> list[str]:
    """`kafka://h1:9092,h2:9092` -> `["h1:9092", "h2:9092"]`; the port defaults to 9092."""
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ConfigError(f"broker {url!r} is not a kafka:// URL (kafka://host:port[,host:port])")
    if "@" in rest:
        # Keeps secrets out of URLs, which end up in logs and error messages.
        raise ConfigError(
            "kafka:// URLs take no credentials: pass username and password as client options"
        )
    servers: list[str] = []
    for part in rest.strip().strip("/").split(","):
        server = part.strip()
        if not server:
            continue
        host, colon, port = server.rpartition(":")
        if not colon or host.endswith(":") or "]" in port:
            server, host, port = f"{server}:9092", server, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"broker {url!r}: {part.strip()!r} is not host:port (kafka://host:port[,host:port])"
            )
        servers.append(server)
    if not servers:
        raise ConfigError(f"broker {url!r} names no host: use kafka://host:port[,host:port]")
    return servers


@dataclass(frozen=True)
class KafkaOptions:
    """The client options `KafkaTransport` accepts, checked once when it is made."""

    # every client
    client_id: str = "streamkit"
    request_timeout_ms: int = 40_000
    retry_backoff_ms: int = 100
    metadata_max_age_ms: int = 300_000
    connections_max_idle_ms: int = 540_000
    # TLS and SASL
    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # consumer
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int | None = None
    max_poll_interval_ms: int = 300_000
    rebalance_timeout_ms: int | None = None
    # When a committed offset is below the log start (retention deleted records that
    # were never processed): "earliest", "latest" or "fail". New groups start earliest.
    auto_offset_reset: str = "earliest"
    # How long a fetch may wait at the end of the log. Kafka answers as soon as data
    # arrives; Tansu holds the fetch for the whole wait, so the 500 ms client default
    # put ~130 ms on the median latency there (25 ms: p50 18 ms, p99 27 ms at 5k/s).
    fetch_max_wait_ms: int = 25
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    # A transport made with read_committed=True (exactly-once) reads committed
    # whatever this says; read_committed here makes the transport's flag true.
    isolation_level: str = "read_uncommitted"
    # producer. Outputs of one processed batch already share record batches (the
    # task processes a batch without yielding to the loop), so lingering only
    # delays them: at 5,000 records/s, 5 ms took p50 from 21 to 25 ms, p99 from 44 to
    # 50 ms, and throughput did not change. Raise it for many small sends (timers).
    linger_ms: float = 0.0
    # aiokafka puts at most one batch per partition in a produce request and keeps one
    # request in flight per broker, and its sender runs only between the chunks a task
    # processes (2,000 records, ~15 ms holding the loop). At 64 KB (~850 records of
    # 75 bytes) a busy partition got under half of each chunk's outputs out per round
    # trip: a task alone on the input (the first ~0.5 s, Tansu answers one partition
    # per fetch) produced at 30-50k records/s and the rest waited for the commit's
    # flush. A batch that holds a whole chunk's outputs goes out in one round trip.
    # Batches are sealed every loop turn whatever their size (linger_ms 0), so a
    # larger bound adds no latency.
    max_batch_size: int = 512 * 1024
    max_request_size: int = 1_048_576
    compression_type: str | None = None
    # made from the TLS settings once, so a bad certificate path fails up front
    _tls: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any]) -> KafkaOptions:
        known = [name for name in cls.__dataclass_fields__ if not name.startswith("_")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"broker {url!r}: unknown kafka client option(s) {', '.join(unknown)}; "
                f"known options: {', '.join(sorted(known))}"
            )
        opts = cls(**options)
        opts._check(url)
        return opts

    def _check(self, url: str) -> None:
        def fail(message: str) -> None:
            raise ConfigError(f"broker {url!r}: {message}")

        if self.security_protocol not in _SECURITY_PROTOCOLS:
            fail(f"security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism not in _SASL_MECHANISMS:
            fail(f"sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}")
        sasl = self.security_protocol.startswith("SASL_")
        if (self.username is not None or self.password is not None) and not sasl:
            fail(
                "username/password are only sent with security_protocol SASL_SSL or "
                f"SASL_PLAINTEXT, not {self.security_protocol}"
            )
        if sasl and (self.username is None or self.password is None):
            fail(f"security_protocol {self.security_protocol} needs username and password")
        tls_files = (self.cafile, self.certfile, self.keyfile)
        if self.ssl_context is not None and any(tls_files):
            fail("give either ssl_context or cafile/certfile/keyfile, not both")
        if (self.ssl_context is not None or any(tls_files)) and not self.security_protocol.endswith(
            "SSL"
        ):
            fail(
                f"TLS settings need security_protocol SSL or SASL_SSL, not {self.security_protocol}"
            )
        if self.isolation_level not in _ISOLATION_LEVELS:
            fail(f"isolation_level must be one of {', '.join(_ISOLATION_LEVELS)}")
        if self.auto_offset_reset not in POLICIES:
            fail("auto_offset_reset must be earliest, latest or fail")
        if self.compression_type not in _COMPRESSION_TYPES:
            fail(f"compression_type must be one of {', '.join(map(str, _COMPRESSION_TYPES))}")
        if self.compression_type is not None and not _codec_available(self.compression_type):
            fail(
                f"compression_type {self.compression_type!r} needs its library: "
                f"pip install 'aiokafka[{self.compression_type}]'"
            )
        if self.session_timeout_ms <= 0 or self.heartbeat_ms >= self.session_timeout_ms:
            fail(
                f"heartbeat_interval_ms ({self.heartbeat_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.linger_ms < 0:
            fail(f"linger_ms must be >= 0, got {self.linger_ms}")
        if self.max_batch_size <= 0:
            fail(f"max_batch_size must be > 0, got {self.max_batch_size}")
        if self.security_protocol.endswith("SSL"):
            context = self.ssl_context
            if context is None:
                try:
                    context = create_ssl_context(
                        cafile=self.cafile, certfile=self.certfile, keyfile=self.keyfile
                    )
                except (OSError, ssl.SSLError) as exc:
                    fail(f"cannot load the TLS files (cafile/certfile/keyfile): {exc}")
            object.__setattr__(self, "_tls", context)

    @property
    def heartbeat_ms(self) -> int:
        # A third of the session timeout, as Kafka recommends, and no slower than
        # aiokafka's 3 s: heartbeats are how a member learns of a rebalance.
        if self.heartbeat_interval_ms is not None:
            return self.heartbeat_interval_ms
        return max(1, min(3000, self.session_timeout_ms // 3))

    def common(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes."""
        kwargs: dict[str, Any] = {
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "connections_max_idle_ms": self.connections_max_idle_ms,
            "security_protocol": self.security_protocol,
            "ssl_context": self._tls,
        }
        if self.security_protocol.startswith("SASL_"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return kwargs

    def fetching(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka consumer: group members and readers."""
        kwargs = self.common()
        kwargs.update(
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_max_bytes=self.fetch_max_bytes,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            isolation_level=self.isolation_level,
        )
        return kwargs

    def consumer(self) -> dict[str, Any]:
        kwargs = self.fetching()
        kwargs.update(
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
        )
        return kwargs

    def reader(self) -> dict[str, Any]:
        kwargs = self.fetching()
        # A reader always seeks, so a reset could only come from an offset
        # outside the log: report it rather than silently jump to either end.
        kwargs.update(auto_offset_reset="none")
        return kwargs

    def producer(self) -> dict[str, Any]:
        kwargs = self.common()
        kwargs.update(
            acks="all",
            compression_type=self.compression_type,
            max_batch_size=self.max_batch_size,
            max_request_size=self.max_request_size,
            # Batches reach aiokafka already sealed; our own timer does the lingering.
            linger_ms=0,
        )
        return kwargs

    def transactional_producer(self, transactional_id: str, timeout_ms: int) -> dict[str, Any]:
        kwargs = self.producer()
        kwargs.update(
            transactional_id=transactional_id,
            enable_idempotence=True,
            transaction_timeout_ms=timeout_ms,
        )
        return kwargs


def _codec_available(name: str) -> bool:
    check: Callable[[], bool] = getattr(codec, f"has_{name}", lambda: False)
    return check()


_CLIENT_ERRORS = (KafkaError, ConsumerStoppedError, OSError)


async def _guard(url: str, what: str, call: Awaitable[T]) -> T:
    """Await an aiokafka call, turning its errors into a TransportError about `what`."""
    try:
        return await call
    except _CLIENT_ERRORS as exc:
        raise TransportError(f"broker {url}: {what} failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


async def _connect(
    url: str,
    what: str,
    start: Callable[[], Awaitable[Any]],
    close: Callable[[], Awaitable[Any]],
) -> None:
    """Start an aiokafka client; one that fails to start is closed, never leaked."""
    try:
        await _guard(url, what, start())
    except BaseException:
        await _stop_quietly(close())
        raise


async def _stop_quietly(call: Awaitable[Any]) -> None:
    try:
        await call
    except Exception:
        log.debug("cleanup after a failed start raised", exc_info=True)
