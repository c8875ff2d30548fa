"""Windows in event time for `grouped.windowed_by(...)`, as Kafka Streams defines them.

- `TimeWindows`: fixed-size windows [start, end) aligned to the epoch; tumbling
  (advance = size, each record in one window) or hopping (advance < size, each
  record in size / advance windows).
- `SlidingWindows`: one window per distinct set of records within
  `time_difference` of each other, [start, end] with end - start = time_difference.
- `SessionWindows`: a key's activity: records at most `inactivity_gap` apart
  share a session, and a record that bridges two sessions merges them.

`grace` is how long after a window ends it still takes out-of-order records.
Past it the window is closed: a record for it is late, and emit-final results are
emitted. Durations are seconds (float) or timedeltas; a window key is a
`Windowed(key, start_ms, end_ms)`.

Grace is a choice, as in Kafka Streams 3.x: `TimeWindows.of_size_and_grace(size,
grace)` or `TimeWindows.of_size_with_no_grace(size)` (and the same pairs for sliding
and session windows) say it; `TimeWindows(size, grace=...)` works too. Left out,
it is 0 (no grace, Kafka's `...WithNoGrace`), and the aggregation logs once that
the grace was not chosen: a stream merged from several partitions or re-keyed is
out of order by the spread between its producers, and a record later than its
window's end is then dropped (counted, and summarised in the log).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TypeVar

from ..errors import ConfigError
from ..state.window_stores import Windowed

__all__ = ["Duration", "SessionWindows", "SlidingWindows", "TimeWindows", "Windowed"]

Duration = float | timedelta  # seconds, or a timedelta

log = logging.getLogger("streamkit.dsl")


def notice_unchosen_grace(windows: object, where: str) -> None:
    """Say once, when an aggregation is declared, that its windows' grace defaulted to 0."""
    if getattr(windows, "grace_chosen", True):
        return
    log.warning(
        "%s uses %r without choosing a grace period: records later than their window's "
        "end are dropped. Say grace=... (or ...with_no_grace / ...and_grace) to choose; "
        "a stream merged from several partitions or re-keyed needs a grace as large as "
        "its disorder",
        where,
        windows,
    )


def duration_ms(duration: Duration) -> int:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    return round(seconds * 1000)


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise ConfigError(problem)


def _grace(grace: Duration | None, what: str) -> tuple[bool, int]:
    """(whether the user chose a grace, the grace in ms): left out, it is 0."""
    grace_ms = duration_ms(grace or 0)
    _check(grace_ms >= 0, f"{what}: grace must be >= 0, got {grace_ms} ms")
    return grace is not None, grace_ms


_W = TypeVar("_W")


def _no_grace(cls: type[_W], span: Duration) -> _W:
    """Windows that close at their end: Kafka's ofSizeWithNoGrace and the like."""
    return cls(span, grace=0)  # type: ignore[call-arg]


def _and_grace(cls: type[_W], span: Duration, grace: Duration) -> _W:
    """Windows that take records up to `grace` after their end: Kafka's ofSizeAndGrace
    and the like."""
    return cls(span, grace=grace)  # type: ignore[call-arg]


class TimeWindows:
    """Tumbling windows of `size`, or hopping ones that start every `advance`."""

    __slots__ = ("advance_ms", "grace_chosen", "grace_ms", "size_ms")

    def __init__(
        self, size: Duration, *, advance: Duration | None = None, grace: Duration | None = None
    ) -> None:
        self.size_ms = duration_ms(size)
        self.advance_ms = self.size_ms if advance is None else duration_ms(advance)
        self.grace_chosen, self.grace_ms = _grace(grace, "TimeWindows")
        _check(self.size_ms > 0, f"TimeWindows: size must be > 0, got {self.size_ms} ms")
        _check(
            0 < self.advance_ms <= self.size_ms,
            f"TimeWindows: need 0 < advance <= size, got advance={self.advance_ms} ms, "
            f"size={self.size_ms} ms",
        )

    @classmethod
    def of(cls, size: Duration, *, grace: Duration | None = None) -> TimeWindows:
        """Tumbling windows (Kafka's TimeWindows.ofSizeAndGrace)."""
        return cls(size, grace=grace)

    of_size_with_no_grace = classmethod(_no_grace)
    of_size_and_grace = classmethod(_and_grace)

    def advance_by(self, advance: Duration) -> TimeWindows:
        """The same windows, hopping: a new one starts every `advance`."""
        grace = self.grace_ms / 1000 if self.grace_chosen else None
        return TimeWindows(self.size_ms / 1000, advance=advance, grace=grace)

    def starts_for(self, timestamp_ms: int) -> range:
        """Starts of the windows holding a (non-negative) timestamp, oldest first."""
        advance = self.advance_ms
        first = max(0, timestamp_ms - self.size_ms + advance) // advance * advance
        return range(first, timestamp_ms + 1, advance)

    def closes_at(self, end_ms: int) -> int:
        """The stream time at which the window ending at `end_ms` (excluded) is closed."""
        return end_ms + self.grace_ms

    @property
    def retention_ms(self) -> int:
        return self.size_ms + self.grace_ms

    def __repr__(self) -> str:
        return (
            f"TimeWindows(size={self.size_ms} ms, advance={self.advance_ms} ms, "
            f"grace={self.grace_ms} ms)"
        )


class SlidingWindows:
    """Windows over records at most `time_difference` apart (Kafka's SlidingWindows)."""

    __slots__ = ("grace_chosen", "grace_ms", "time_difference_ms")

    def __init__(self, time_difference: Duration, *, grace: Duration | None = None) -> None:
        self.time_difference_ms = duration_ms(time_difference)
        self.grace_chosen, self.grace_ms = _grace(grace, "SlidingWindows")
        _check(
            self.time_difference_ms >= 0,
            f"SlidingWindows: time_difference must be >= 0, got {self.time_difference_ms} ms",
        )

    @classmethod
    def of(cls, time_difference: Duration, *, grace: Duration | None = None) -> SlidingWindows:
        return cls(time_difference, grace=grace)

    of_time_difference_with_no_grace = classmethod(_no_grace)
    of_time_difference_and_grace = classmethod(_and_grace)

    def closes_at(self, end_ms: int) -> int:
        """The stream time at which the window ending at `end_ms` (included) is closed."""
        return end_ms + self.grace_ms + 1

    @property
    def retention_ms(self) -> int:
        """A record reads windows up to two time differences back (its predecessor's)."""
        return 2 * self.time_difference_ms + self.grace_ms

    def __repr__(self) -> str:
        return (
            f"SlidingWindows(time_difference={self.time_difference_ms} ms, "
            f"grace={self.grace_ms} ms)"
        )


class SessionWindows:
    """Per-key sessions: records at most `inactivity_gap` apart share one."""

    __slots__ = ("gap_ms", "grace_chosen", "grace_ms")

    def __init__(self, inactivity_gap: Duration, *, grace: Duration | None = None) -> None:
        self.gap_ms = duration_ms(inactivity_gap)
        self.grace_chosen, self.grace_ms = _grace(grace, "SessionWindows")
        _check(self.gap_ms > 0, f"SessionWindows: inactivity_gap must be > 0, got {self.gap_ms} ms")

    @classmethod
    def of(cls, inactivity_gap: Duration, *, grace: Duration | None = None) -> SessionWindows:
        return cls(inactivity_gap, grace=grace)

    of_inactivity_gap_with_no_grace = classmethod(_no_grace)
    of_inactivity_gap_and_grace = classmethod(_and_grace)

    def closes_at(self, end_ms: int) -> int:
        """A session is closed once no record within the grace can reach it any more:
        stream time past its end + gap + grace (Kafka Streams' session close time)."""
        return end_ms + self.gap_ms + self.grace_ms + 1

    @property
    def retention_ms(self) -> int:
        """A gap beyond closing, so that a closed session is still there to refuse late joins."""
        return 2 * self.gap_ms + self.grace_ms

    def __repr__(self) -> str:
        return f"SessionWindows(inactivity_gap={self.gap_ms} ms, grace={self.grace_ms} ms)"


class JoinWindows:
    """How far apart in event time two records may be to join, and how long unmatched
    records wait for a partner.

    A left record at t joins right records in [t - before, t + after]. Each side
    keeps its records for before + after + grace of its own time, and a record,
    however late, joins what the other side still keeps. Left and outer joins emit
    a record that found no partner once its window and grace have passed (stream
    time past t + after + grace for a left record, t + before + grace for a right
    one), or at once when its window has already ended.
    """

    __slots__ = ("after_ms", "before_ms", "grace_chosen", "grace_ms")

    def __init__(self, *, before: Duration, after: Duration, grace: Duration | None = None) -> None:
        self.before_ms = duration_ms(before)
        self.after_ms = duration_ms(after)
        self.grace_chosen = grace is not None
        self.grace_ms = duration_ms(grace or 0)
        if self.before_ms + self.after_ms < 0:
            raise ConfigError(
                f"JoinWindows: before + after must be >= 0 (the window's size), got "
                f"before={self.before_ms} ms, after={self.after_ms} ms"
            )
        if self.grace_ms < 0:
            raise ConfigError(f"JoinWindows: grace must be >= 0, got {self.grace_ms} ms")

    @classmethod
    def of(cls, difference: Duration, grace: Duration | None = None) -> JoinWindows:
        """Records at most `difference` apart, either way (Kafka's ofTimeDifference...)."""
        return cls(before=difference, after=difference, grace=grace)

    @classmethod
    def of_time_difference_with_no_grace(cls, difference: Duration) -> JoinWindows:
        """Kafka's JoinWindows.ofTimeDifferenceWithNoGrace."""
        return cls(before=difference, after=difference, grace=0)

    @classmethod
    def of_time_difference_and_grace(cls, difference: Duration, grace: Duration) -> JoinWindows:
        """Kafka's JoinWindows.ofTimeDifferenceAndGrace."""
        return cls(before=difference, after=difference, grace=grace)

    def with_before(self, before: Duration) -> JoinWindows:
        """The same windows, reaching `before` back from a left record (Kafka's before())."""
        return JoinWindows(before=before, after=self.after_ms / 1000, grace=self._grace())

    def with_after(self, after: Duration) -> JoinWindows:
        """The same windows, reaching `after` ahead of a left record (Kafka's after())."""
        return JoinWindows(before=self.before_ms / 1000, after=after, grace=self._grace())

    def _grace(self) -> float | None:
        return self.grace_ms / 1000 if self.grace_chosen else None

    def __repr__(self) -> str:
        return (
            f"JoinWindows(before={self.before_ms} ms, after={self.after_ms} ms, "
            f"grace={self.grace_ms} ms)"
        )
