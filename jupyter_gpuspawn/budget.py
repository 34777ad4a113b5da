"""Budget weeks: when a week of GPU-hours begins, in the hub's local time zone (pure; no I/O).

A week starts on a weekday at an hour, e.g. "Monday 00:00" (the default) or "Sunday 18:00". Local
time is the hub process's (TZ, /etc/localtime); a week around a daylight-saving change is an hour
shorter or longer, never shifted.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEK_START_RE = re.compile(r"\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*")


class WeekStartError(ValueError):
    pass


def parse_week_start(text: str) -> tuple:
    """(weekday 0 = Monday, hour, minute) from "Monday 00:00"; WeekStartError says what is
    expected."""
    match = _WEEK_START_RE.fullmatch(text or "")
    day = match and next(
        (
            i
            for i, name in enumerate(WEEKDAYS)
            if name.startswith(match.group(1).lower()) and len(match.group(1)) >= 3
        ),
        None,
    )
    if not match or day is None or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise WeekStartError(
            f"a week start must look like 'Monday 00:00' (a weekday, then HH:MM), got {text!r}"
        )
    return day, int(match.group(2)), int(match.group(3))


def week_start(now: float, spec: str = "Monday 00:00") -> float:
    """Epoch seconds of the start of the budget week that contains ``now``. A start time that
    occurs twice on its day (summer time ends) is its first occurrence; one that does not occur
    (summer time begins) is the moment the clocks jump past it. Compared as instants, never as
    wall-clock times, which repeat."""
    weekday, hour, minute = parse_week_start(spec)
    local = dt.datetime.fromtimestamp(now)
    day = local.date() - dt.timedelta(days=(local.weekday() - weekday) % 7)
    for weeks_back in (0, 1):
        # fold 0 (the default): the first of a repeated time, the later side of a skipped one
        start = dt.datetime.combine(
            day - dt.timedelta(days=7 * weeks_back), dt.time(hour, minute)
        ).timestamp()
        if start <= now:
            return start
    raise AssertionError("unreachable: a week back is always in the past")


def next_week_start(now: float, spec: str = "Monday 00:00") -> float:
    # the start of the week containing a moment well inside the next one: the same rule as above,
    # however long this week is (167 or 169 hours around a change of summer time)
    return week_start(week_start(now, spec) + 7 * 24 * 3600 + 2 * 3600, spec)


def describe(when: float) -> str:
    """ "Monday 00:00", as the form says when the budget resets."""
    return dt.datetime.fromtimestamp(when).strftime("%A %H:%M")


def _hours(h: float) -> str:
    return f"{h:.1f}".removesuffix(".0") if h >= 0.1 or h == 0 else f"{h:.2g}"


@dataclass(frozen=True)
class BudgetState:
    """One student's GPU-hour budget in one course, this week."""

    hours: float  # the week's budget, grants included
    used: float  # GPU-hours used this week
    reset: float  # epoch seconds when the next week begins
    course_title: str

    @property
    def left(self) -> float:
        return max(0.0, self.hours - self.used)

    def line(self) -> str:
        """For the spawn form's course card."""
        return (
            f"{_hours(self.left)} of {_hours(self.hours)} GPU-hours left this week; resets "
            f"{describe(self.reset)}"
        )

    def spent(self) -> str:
        """Why a start with GPUs is refused."""
        return (
            f"You have used your {_hours(self.hours)} GPU-hours for this week in "
            f"{self.course_title}; they "
            f"reset {describe(self.reset)}. CPU-only servers (0 GPUs) still start."
        )

    def seconds_left(self, gpu_rate: float) -> float:
        """How long a server using ``gpu_rate`` GPU-hours per hour may still run."""
        return self.left * 3600 / max(gpu_rate, 1e-9)

    def warning(self) -> str:
        """For JupyterLab, while the end is near."""
        return (
            f"This server has nearly used your {_hours(self.hours)} GPU-hours for this week in "
            f"{self.course_title}; it will be stopped when they run out. They reset "
            f"{describe(self.reset)}."
        )

    def stopped(self) -> str:
        """For the next spawn page."""
        return (
            f"Your previous server was stopped because it used up your {_hours(self.hours)} "
            f"GPU-hours for this "
            f"week in {self.course_title}. They reset {describe(self.reset)}; CPU-only servers "
            f"still start. "
            "Your files are kept."
        )
