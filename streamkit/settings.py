"""App settings: code arguments, then `STREAMKIT_*` environment variables, then defaults."""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .errors import ConfigError
from .serde import problems

log = logging.getLogger("streamkit.settings")

BROKER_SCHEMES = ("memory", "kafka")


class Settings(BaseSettings):
    """Every knob of an app; each one can be set as `STREAMKIT_<NAME>` too."""

    model_config = SettingsConfigDict(env_prefix="STREAMKIT_", extra="forbid")

    broker: str = "memory://"
    data_dir: Path = Path(".streamkit")
    # at_least_once: outputs acknowledged before input offsets are committed; a crash
    # repeats the uncommitted records' effects. exactly_once: one Kafka transaction
    # per task commit holds its outputs, changelog records and input offsets.
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # How often a task commits: outputs flushed and acknowledged, then input offsets.
    # Default 1 s, or 100 ms under exactly-once (Kafka Streams' defaults): a
    # transaction's outputs are invisible to read_committed readers until it commits.
    commit_interval_s: float = 1.0
    # How long the broker lets a transaction stay open before it aborts it (a
    # producer that hung or died mid-transaction), exactly-once only.
    transaction_timeout_ms: int = Field(default=60_000, gt=0)
    # Records one fetch hands over at most; the unit of batching on the hot path.
    max_poll_records: int = 2000
    # Bound of each partition's queue; a full queue pauses the partition (back-pressure).
    partition_buffer_records: int = 10_000
    # Changed table keys a task holds before it commits early (write-behind cache
    # bound), and unchanged keys it keeps in memory to spare SQLite reads.
    store_cache_max_keys: int = 50_000
    # ... and the changed keys' serialized size at which it commits early.
    store_cache_max_bytes: int = 64 * 1024 * 1024
    # Warm copies of each stateful task on other workers (Kafka Streams'
    # num.standby.replicas); they tail the changelogs so a failover restores little.
    num_standby_replicas: int = 0
    # A task that must move goes to a worker whose copy is at most this many
    # changelog records behind, while one exists (acceptable.recovery.lag).
    acceptable_recovery_lag: int = 10_000
    # Warm-up copies in the group at once (KIP-441): a stateful task whose new
    # worker is further behind than acceptable_recovery_lag stays where it is while
    # a warm-up copy catches up there. 0: such a task moves at once and restores.
    max_warmup_replicas: int = Field(default=2, ge=0)
    # A worker warming up copies asks for a rebalance (to take the tasks over) as
    # soon as they have caught up, or after this long at the latest.
    probing_rebalance_interval_s: float = Field(default=600.0, gt=0)
    # This worker's rack (or zone): standbys go to other racks where possible.
    rack: str | None = None
    # How long a task waits for another worker on this machine to let go of its
    # state directory (a shared --data-dir) before it works without local state.
    state_dir_lock_wait_s: float = 10.0
    # How long SIGTERM may take: finish the batch in hand, commit, close.
    shutdown_timeout_s: float = 15.0
    # A loop blocked this long is reported with the agent on its stack.
    loop_stall_warning_s: float = 2.0
    # A partition with waiting records that has not moved for this long is reported.
    progress_warning_s: float = 60.0
    # How often a worker publishes its tasks to `{app_id}-status` as a heartbeat;
    # `streamkit status` marks a worker silent for three intervals as gone.
    status_interval_s: float = Field(default=10.0, gt=0)
    # Serve the app's Prometheus metrics on this port (http://host:PORT/metrics); the
    # web server (web_port) serves them too.
    metrics_port: int | None = None
    # The worker's web server: interactive queries, SQL, health, /metrics and the
    # app's pages (docs/querying.md). None: no server; 0: a free port, logged.
    web_port: int | None = Field(default=None, ge=0, le=65535)
    # The address the server listens on, and the host other workers reach it by (the
    # machine's name by default); workers advertise `web_host:port` to each other in
    # the group's metadata so that each can forward a query to the key's owner.
    web_bind: str = "0.0.0.0"
    web_host: str | None = None
    # How long a query forwarded to another worker may take before it answers 503.
    web_forward_timeout_s: float = Field(default=5.0, gt=0)
    # Bounds of a `/sql` query: its time, and the rows it may return.
    sql_timeout_s: float = Field(default=5.0, gt=0)
    sql_max_rows: int = Field(default=10_000, gt=0)
    # Allocations between young garbage collections while a worker runs (Python's
    # default is 700, which makes every batch's objects survive into older, costlier
    # collections); 0 leaves the interpreter's setting alone.
    gc_young_threshold: int = Field(default=10_000, ge=0)
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Passed to the aiokafka clients: session_timeout_ms, security_protocol, sasl_*,
    # compression_type, linger_ms, ... (STREAMKIT_KAFKA_OPTIONS takes JSON).
    kafka_options: dict[str, Any] = {}
    # A committed offset that retention has overtaken: resume at the log's start or
    # end, or stop. (A new group always starts at the earliest offset.)
    auto_offset_reset: Literal["earliest", "latest", "fail"] = "earliest"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _eos_commit_interval(self) -> Settings:
        if self.exactly_once and "commit_interval_s" not in self.model_fields_set:
            # Not marked as set: switching the guarantee back restores the 1 s default.
            object.__setattr__(self, "commit_interval_s", 0.1)
        return self

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def transport_options(self) -> dict[str, Any]:
        """What the transport's clients take: kafka_options plus streamkit's own policies."""
        return {"auto_offset_reset": self.auto_offset_reset, **self.kafka_options}

    @field_validator("broker")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"unknown broker {url!r}: use memory:// or kafka://host:port[,host:port]"
            )
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


ENV_PREFIX = "STREAMKIT_"
# Variables of the project's own tools, not settings: the test suite's, the
# benchmarks' and the chaos runs' broker and options.
TOOL_PREFIXES = ("STREAMKIT_TEST_", "STREAMKIT_BENCH_", "STREAMKIT_CHAOS_")
_warned: set[str] = set()


def make_settings(base: Settings | None = None, **overrides: Any) -> Settings:
    """Build settings, turning pydantic's report into one readable ConfigError.

    Without `base` (an app being made), also say once which `STREAMKIT_*`
    variables will not be read: names that are no setting, and settings the
    app's code gives, which win over the environment.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if base is None:
        _warn_about_environment(given, os.environ)
    try:
        if base is None:
            return Settings(**given)
        # Only what was set: defaults that depend on other settings are derived anew.
        return Settings(**{**base.model_dump(exclude_unset=True), **given})
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {problems(exc, 'settings')}") from None
    except SettingsError as exc:
        # pydantic-settings could not parse a variable (JSON for dict settings).
        field = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + (field[1].upper() if field else "?")
        raise ConfigError(
            f"{name} is not valid JSON ({exc.__cause__ or exc}): give an object, like "
            f"{name}='{{\"session_timeout_ms\": 6000}}'"
        ) from None


def _warn_about_environment(in_code: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    fields = Settings.model_fields
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable.startswith(TOOL_PREFIXES):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if variable in _warned:
            continue
        if name not in fields:
            _warned.add(variable)
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
            log.warning("%s is not a streamkit setting and is ignored%s", variable, hint)
        elif name in in_code and str(in_code[name]) != value:
            _warned.add(variable)
            log.warning(
                "%s=%s is ignored: the app's code sets %s=%r in sk.App(...), which wins "
                "over the environment (the worker's command-line options win over both)",
                variable,
                value,
                name,
                in_code[name],
            )
