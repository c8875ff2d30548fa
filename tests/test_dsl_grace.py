"""Window grace as a visible choice, and the periodic summary of late records."""

from __future__ import annotations

import logging

import pytest

import streamkit as sk
from streamkit.dsl.joins import JoinWindows
from streamkit.testing import TopologyTestDriver


def test_explicit_grace_forms_say_what_they_choose() -> None:
    assert sk.TimeWindows.of_size_with_no_grace(10).grace_ms == 0
    assert sk.TimeWindows.of_size_and_grace(10, 2).grace_ms == 2_000
    hopping = sk.TimeWindows.of_size_and_grace(10, 2).advance_by(5)
    assert (hopping.size_ms, hopping.advance_ms, hopping.grace_ms) == (10_000, 5_000, 2_000)
    assert sk.SlidingWindows.of_time_difference_and_grace(5, 1).grace_ms == 1_000
    assert sk.SlidingWindows.of_time_difference_with_no_grace(5).grace_ms == 0
    assert sk.SessionWindows.of_inactivity_gap_and_grace(5, 3).grace_ms == 3_000
    assert sk.SessionWindows.of_inactivity_gap_with_no_grace(5).grace_ms == 0
    join = JoinWindows.of_time_difference_and_grace(1, 0.5).with_after(0)
    assert (join.before_ms, join.after_ms, join.grace_ms) == (1_000, 0, 500)
    assert JoinWindows.of_time_difference_with_no_grace(1).with_before(0).grace_ms == 0
    for chosen in (
        sk.TimeWindows.of_size_with_no_grace(10),
        sk.TimeWindows(10, grace=0),
        JoinWindows.of_time_difference_with_no_grace(1),
    ):
        assert chosen.grace_chosen
    assert not sk.TimeWindows(10).grace_chosen
    assert sk.TimeWindows(10).grace_ms == 0  # the default, as Kafka's ...WithNoGrace


def _counting(windows: sk.TimeWindows) -> tuple[sk.App, sk.Topic]:
    app = sk.App("grace")
    clicks = app.topic("clicks", key_type=str, value_type=str)
    app.stream(clicks).group_by_key().windowed_by(windows).count(name="n", close_idle_after=None)
    return app, clicks


def test_an_unchosen_grace_is_said_once_when_the_aggregation_is_declared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="streamkit.dsl"):
        _counting(sk.TimeWindows(60))
    assert [r.getMessage() for r in caplog.records if "without choosing a grace" in r.message]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamkit.dsl"):
        _counting(sk.TimeWindows.of_size_with_no_grace(60))
    assert not [r for r in caplog.records if "without choosing a grace" in r.getMessage()]


def test_late_records_are_summarised_per_interval_not_logged_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, clicks = _counting(sk.TimeWindows.of_size_and_grace(10, 1))
    with TopologyTestDriver(app) as driver, caplog.at_level(logging.WARNING):
        driver.pipe(clicks, "a", "x", timestamp_ms=30_000)
        for ts in (1_000, 2_000, 3_000):  # all three long closed
            driver.pipe(clicks, "a", "x", timestamp_ms=ts)
        driver.pipe(clicks, "a", "x", timestamp_ms=31_000)
        assert driver.store("n") == {sk.Windowed("a", 30_000, 40_000): 2}
        caplog.clear()
        driver.advance_wall_clock(60)
        summaries = [r.getMessage() for r in caplog.records if "records since" in r.getMessage()]
        assert len(summaries) == 1
        assert "3 of 5 records since" in summaries[0]
        assert "grace (1000 ms)" in summaries[0]
        caplog.clear()
        driver.advance_wall_clock(60)  # nothing late since: nothing to say
        assert not [r for r in caplog.records if "records since" in r.getMessage()]
