"""Kafka Streams conformance: KStream-GlobalKTable left join.

Ported from org.apache.kafka.streams.kstream.internals.KStreamGlobalKTableLeftJoinTest
(Kafka 3.x): the stream's value optionally carries the table key after a comma; a
key selector that finds none gives None, and such a record is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from conformance import GLOBAL_JOIN_KEYS, GlobalJoinDriver

KEYS = GLOBAL_JOIN_KEYS
Action = Callable[[GlobalJoinDriver], None]


def _stream(count: int, prefix: str, include_foreign_key: bool = True) -> Action:
    return lambda d: d.push_to_stream(count, prefix, include_foreign_key)


def _table(count: int, prefix: str | None) -> Action:
    return lambda d: d.push_to_global_table(count, prefix)


def _steps(*steps: tuple[Action, list[str]]) -> None:
    """Kafka's push-then-checkAndClearProcessResult sequence."""

    def run(d: GlobalJoinDriver) -> None:
        for number, (action, expected) in enumerate(steps):
            action(d)
            assert [f"{k}:{v}" for k, v, _ in d.results()] == expected, f"step {number}"

    GlobalJoinDriver("left_join").run(run)


X_TWO_NO_TABLE = ["0:X0,FKey0+null", "1:X1,FKey1+null"]
X_FOUR_Y_TWO = ["0:X0,FKey0+Y0", "1:X1,FKey1+Y1", "2:X2,FKey2+null", "3:X3,FKey3+null"]


def test_KStreamGlobalKTableLeftJoinTest_shouldNotJoinWithEmptyGlobalTableOnStreamUpdates() -> None:
    _steps((_stream(2, "X"), X_TWO_NO_TABLE))


def test_KStreamGlobalKTableLeftJoinTest_shouldNotJoinOnGlobalTableUpdates() -> None:
    _steps(
        (_stream(2, "X"), X_TWO_NO_TABLE),
        (_table(2, "Y"), []),
        (_stream(4, "X"), X_FOUR_Y_TWO),
        (_table(4, "YY"), []),
        (_stream(4, "X"), [f"{k}:X{k},FKey{k}+YY{k}" for k in KEYS]),
        (_table(4, "YYY"), []),
    )


def test_KStreamGlobalKTableLeftJoinTest_shouldJoinRegardlessIfMatchFoundOnStreamUpdates() -> None:
    _steps((_table(2, "Y"), []), (_stream(4, "X"), X_FOUR_Y_TWO))


def test_KStreamGlobalKTableLeftJoinTest_shouldClearGlobalTableEntryOnNullValueUpdates() -> None:
    _steps(
        (_table(4, "Y"), []),
        (_stream(4, "X"), [f"{k}:X{k},FKey{k}+Y{k}" for k in KEYS]),
        (_table(2, None), []),
        (
            _stream(4, "XX"),
            ["0:XX0,FKey0+null", "1:XX1,FKey1+null", "2:XX2,FKey2+Y2", "3:XX3,FKey3+Y3"],
        ),
    )


def test_KStreamGlobalKTableLeftJoinTest_shouldNotJoinOnNullKeyMapperValues() -> None:
    _steps((_table(4, "Y"), []), (_stream(4, "XXX", include_foreign_key=False), []))
