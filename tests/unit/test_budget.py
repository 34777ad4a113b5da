"""Budget weeks (budget.py): parsing the week start, the week that contains a time, around the
boundary and across a daylight-saving change. Time zones are set for real (TZ + time.tzset) and
restored after each test."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from jupyter_gpuspawn.budget import (
    WeekStartError,
    describe,
    next_week_start,
    parse_week_start,
    week_start,
)

HOUR = 3600.0
DAY = 24 * HOUR


@pytest.fixture
def tz():
    """Switch the process's local time zone: tz("Europe/Berlin"). Restores TZ afterwards."""
    before = os.environ.get("TZ")

    def use(name: str):
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def local(*args) -> float:
    """Epoch seconds of a local wall-clock time in the current TZ."""
    return dt.datetime(*args).timestamp()


# ---- parse_week_start ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Monday 00:00", (0, 0, 0)),
        ("sun 18:30", (6, 18, 30)),
        ("SUNDAY 18:30", (6, 18, 30)),
        ("  Wed 7:05 ", (2, 7, 5)),
        ("Saturday 23:59", (5, 23, 59)),
    ],
)
def test_parse_week_start_accepts(text, expected):
    assert parse_week_start(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Funday 00:00",
        "Monday 24:00",
        "Monday 12:60",
        "Monday",
        "00:00",
        "",
        "mo 00:00",
        "Monday 0000",
        "Monday 00:00 extra",
        "Mondays 00:00",
    ],
)
def test_parse_week_start_refuses_with_the_expected_form(text):
    with pytest.raises(WeekStartError) as info:
        parse_week_start(text)
    message = str(info.value)
    assert "'Monday 00:00'" in message and "HH:MM" in message
    assert repr(text) in message  # says what it got
    assert isinstance(info.value, ValueError)


def test_parse_week_start_refuses_none():
    with pytest.raises(WeekStartError, match="Monday 00:00"):
        parse_week_start(None)


# ---- week_start / next_week_start ----------------------------------------------------------------
def test_monday_week_around_the_boundary(tz):
    tz("UTC")
    monday = local(2026, 11, 23)  # a Monday
    assert dt.datetime.fromtimestamp(monday).strftime("%A %H:%M") == "Monday 00:00"
    # just before: still the previous week
    assert week_start(monday - 1) == monday - 7 * DAY
    assert next_week_start(monday - 1) == monday
    assert week_start(monday - 0.001) == monday - 7 * DAY
    # at the boundary: the new week
    assert week_start(monday) == monday
    assert next_week_start(monday) == monday + 7 * DAY
    # just after, mid-week, and the last second of the week
    assert week_start(monday + 1) == monday
    assert week_start(monday + 3.5 * DAY) == monday
    assert week_start(monday + 7 * DAY - 1) == monday
    assert next_week_start(monday + 7 * DAY - 1) == monday + 7 * DAY
    assert week_start(monday, "Monday 00:00") == week_start(monday)  # the default


def test_non_monday_start(tz):
    tz("UTC")
    sunday = local(2026, 11, 29, 18, 30)  # Sunday 18:30
    spec = "Sunday 18:30"
    assert week_start(sunday - 1, spec) == sunday - 7 * DAY
    assert week_start(sunday, spec) == sunday
    assert week_start(sunday + 1, spec) == sunday
    # Sunday morning, same calendar day, before the hour: the previous week
    assert week_start(local(2026, 11, 29, 9, 0), spec) == sunday - 7 * DAY
    # Monday right after, and Wednesday: the week that began on Sunday
    assert week_start(local(2026, 11, 30, 0, 0), spec) == sunday
    assert week_start(local(2026, 12, 2, 12, 0), spec) == sunday
    assert next_week_start(local(2026, 12, 2, 12, 0), spec) == sunday + 7 * DAY
    # a mid-week start: Wednesday 09:00
    wed = local(2026, 11, 25, 9, 0)
    assert week_start(wed - 60, "Wednesday 09:00") == wed - 7 * DAY
    assert week_start(wed, "wed 09:00") == wed
    assert week_start(local(2026, 11, 26, 8, 0), "Wednesday 09:00") == wed
    assert week_start(local(2026, 11, 24, 23, 0), "Wednesday 09:00") == wed - 7 * DAY


def test_week_start_rejects_a_bad_spec(tz):
    tz("UTC")
    with pytest.raises(WeekStartError):
        week_start(time.time(), "Funday 00:00")


def test_week_across_the_end_of_summer_time_is_169_hours(tz):
    tz("Europe/Berlin")
    # the last Sunday of October 2026 is the 25th: 03:00 CEST becomes 02:00 CET
    monday = local(2026, 10, 19)  # 00:00 CEST = 22:00 UTC on the 18th
    next_monday = local(2026, 10, 26)  # 00:00 CET = 23:00 UTC on the 25th
    assert monday == dt.datetime(2026, 10, 18, 22, tzinfo=dt.timezone.utc).timestamp()
    assert next_monday == dt.datetime(2026, 10, 25, 23, tzinfo=dt.timezone.utc).timestamp()
    for now in (monday, local(2026, 10, 25, 1, 0), local(2026, 10, 25, 12, 0), next_monday - 1):
        assert week_start(now) == monday
        assert next_week_start(now) == next_monday
    assert next_week_start(monday) - week_start(monday) == 169 * HOUR
    # the week after the change starts at local midnight again, not 23:00 or 01:00
    assert week_start(next_monday) == next_monday
    assert week_start(next_monday + 1) == next_monday
    assert describe(week_start(next_monday + 1)) == "Monday 00:00"
    assert next_week_start(next_monday) - next_monday == 168 * HOUR
    # a Sunday 18:00 start, asked on the morning of the change: the previous Sunday at 18:00 summer
    # time
    assert week_start(local(2026, 10, 25, 9, 0), "Sunday 18:00") == local(2026, 10, 18, 18, 0)
    assert next_week_start(local(2026, 10, 25, 9, 0), "Sunday 18:00") == local(2026, 10, 25, 18, 0)


def test_week_across_the_start_of_summer_time_is_167_hours(tz):
    tz("Europe/Berlin")
    # the last Sunday of March 2026 is the 29th: 02:00 CET becomes 03:00 CEST
    monday, next_monday = local(2026, 3, 23), local(2026, 3, 30)
    assert week_start(local(2026, 3, 29, 12, 0)) == monday
    assert next_week_start(local(2026, 3, 29, 12, 0)) - monday == 167 * HOUR
    assert week_start(next_monday) == next_monday
    # a Sunday 18:00 start on the day of the change: still 18:00 local
    sunday = local(2026, 3, 29, 18, 0)
    assert week_start(sunday + 60, "Sunday 18:00") == sunday
    assert dt.datetime.fromtimestamp(week_start(sunday + 60, "Sunday 18:00")).hour == 18
    # asked that morning: the previous Sunday at 18:00 winter time, 167 hours before
    assert week_start(sunday - 9 * HOUR, "Sunday 18:00") == local(2026, 3, 22, 18, 0)
    assert sunday - local(2026, 3, 22, 18, 0) == 167 * HOUR


@pytest.mark.parametrize(
    "zone, spec",
    [
        ("Europe/Berlin", "Sunday 02:30"),  # 02:30 occurs twice in October, never in March
        ("America/New_York", "Sunday 02:30"),
        ("America/Santiago", "Saturday 23:30"),  # changes at midnight, Saturday to Sunday
        ("America/Santiago", "Sunday 00:00"),
    ],
)
def test_a_week_start_inside_a_change_of_summer_time_gives_whole_weeks(tz, zone, spec):
    # a wall-clock start that repeats or is skipped: weeks still follow one another, each moment in
    # exactly one of them (before, the half hour after a repeated start fell back into last week)
    tz(zone)
    t, end = local(2026, 1, 1), local(2027, 1, 1)
    previous = None
    while t < end:
        start, following = week_start(t, spec), next_week_start(t, spec)
        assert start <= t < following, (zone, spec, describe(t))
        assert week_start(following, spec) == following
        assert following - start in (167 * HOUR, 168 * HOUR, 169 * HOUR), describe(start)
        assert previous is None or start >= previous
        previous = start
        t += 600


# ---- describe ------------------------------------------------------------------------------------
def test_describe(tz):
    tz("Europe/Berlin")
    assert describe(local(2026, 11, 23)) == "Monday 00:00"
    assert describe(next_week_start(local(2026, 11, 25, 15, 0))) == "Monday 00:00"
    assert describe(week_start(local(2026, 12, 2), "sun 18:30")) == "Sunday 18:30"
    assert describe(local(2026, 11, 25, 7, 5)) == "Wednesday 07:05"
