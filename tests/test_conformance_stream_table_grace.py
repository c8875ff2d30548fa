"""Kafka Streams conformance: stream-table join with a grace over a versioned table.

Ported from org.apache.kafka.streams.kstream.internals.KStreamKTableJoinWithGraceTest
(KIP-923): a stream record waits until stream time is `grace` past it, then joins
the table's version valid at its timestamp; one already that late joins at once.
"""

from __future__ import annotations

import pytest
from conformance import JoinStep, run_join_steps, tostring_joiner

import streamkit as sk
from streamkit.testing import TopologyTestDriver

CASES: dict[str, tuple[float, list[JoinStep]]] = {
    "shouldDelayJoinByGracePeriod": (
        0.002,
        [
            (("table", 4, "Y"), []),
            (("stream", 4, "X"), [(0, "X0+Y0", 0), (1, "X1+Y1", 1)]),
            (("table", 4, "YY"), []),
            (("stream", 4, "X"), [(0, "X0+YY0", 0), (1, "X1+YY1", 1)]),
            (("table", 4, "YYY"), []),
        ],
    ),
    "shouldNotJoinWithEmptyTableOnStreamUpdates": (0.001, [(("stream", 4, "X"), [])]),
    "shouldNotJoinOnTableUpdates": (
        0.001,
        [
            (("stream", 2, "X"), []),
            (("table", 2, "Y"), []),
            (("stream", 4, "X"), [(0, "X0+Y0", 0), (1, "X1+Y1", 1), (1, "X1+Y1", 1)]),
            (("table", 4, "YY"), []),
            (("stream", 4, "X"), [(0, "X0+YY0", 0), (1, "X1+YY1", 1), (2, "X2+YY2", 2)]),
            (("table", 4, "YYY"), []),
        ],
    ),
    "shouldJoinOnlyIfMatchFoundOnStreamUpdates": (
        0.003,
        [(("table", 2, "Y"), []), (("stream", 4, "X"), [(0, "X0+Y0", 0)])],
    ),
    "shouldClearTableEntryOnNullValueUpdates": (
        0.002,
        [
            (("table", 4, "Y"), []),
            (("stream", 4, "X"), [(0, "X0+Y0", 0), (1, "X1+Y1", 1)]),
            (("nulls", 2, ""), []),
            (("stream", 4, "XX"), []),
        ],
    ),
}


def _join(app: sk.App, grace: float, history: float | None) -> tuple[sk.Topic, sk.Topic, sk.Topic]:
    stream_topic, table_topic, out = (
        app.topic(n, key_type=int, value_type=str) for n in ("streamTopic", "tableTopic", "out")
    )
    table = app.ktable(table_topic, name="V-grace", history_retention=history)
    app.stream(stream_topic).join(table, tostring_joiner, grace=grace, name="Grace").to(out)
    return stream_topic, table_topic, out


@pytest.mark.parametrize("method", CASES)
def test_KStreamKTableJoinWithGraceTest(method: str) -> None:
    """KStreamKTableJoinWithGraceTest.<method>; the table keeps 5 minutes of history."""
    grace, steps = CASES[method]
    app = sk.App("stream-table-grace")
    stream_topic, table_topic, out = _join(app, grace, 300)
    with TopologyTestDriver(app) as driver:
        # pushToTable writes every row at timestamp 0 here.
        run_join_steps(driver, (stream_topic, table_topic, out), steps, lambda _key: 0)


def test_KStreamKTableJoinWithGraceTest_shouldFailIfTableIsNotVersioned() -> None:
    with pytest.raises(sk.ConfigError, match="versioned table"):
        _join(sk.App("not-versioned"), 0.006, None)
    with pytest.raises(sk.ConfigError, match="history retention"):
        _join(sk.App("too-short"), 10, 1)  # Kafka: history retention must be >= grace
