"""Schedule windows such as ``mon-fri 20:00-07:00``, evaluated on the box's wall clock.

A window that ends earlier than it starts runs past midnight into the next day; the days
named are the days it *starts* on, so ``mon-fri 20:00-07:00`` covers Friday night until
Saturday 07:00 but not Monday 00:00–07:00. Membership is always computed from local wall-clock
time, so a DST change moves the boundaries with the clock, as a parent expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    "daily": tuple(range(7)),
    "everyday": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
    "weekend": (5, 6),
}
_SPAN = re.compile(r"^\s*(?:(?P<days>\S+)\s+)?(?P<start>\S+?)\s*-\s*(?P<end>\S+)\s*$")
_TIME = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")
_FORMAT_HINT = "write e.g. 'mon-fri 20:00-07:00', 'sat,sun 21:00-08:00' or 'daily 12:00-13:00'"


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str) -> int:
    name = text.strip().lower()
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if name in _FULL_NAMES:
        return _FULL_NAMES.index(name)
    raise ValueError(f"'{text.strip()}' is not a weekday; use mon, tue, wed, thu, fri, sat, sun")


def parse_days(text: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``fri-mon`` (wraps), ``daily``, ``weekdays``, ``weekends``."""
    lowered = text.strip().lower()
    if lowered in _DAY_ALIASES:
        return frozenset(_DAY_ALIASES[lowered])
    days: set[int] = set()
    for item in lowered.split(","):
        if "-" in item:
            first_text, _, last_text = item.partition("-")
            first, last = _day(first_text), _day(last_text)
            span = (last - first) % 7
            days.update((first + i) % 7 for i in range(span + 1))
        else:
            days.add(_day(item))
    return frozenset(days)


def parse_time(text: str) -> int:
    """Minutes after midnight; ``24:00`` is allowed as an end."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"'{text.strip()}' is not a time of day; write HH:MM, e.g. 07:30")
    hours, minutes = int(match["h"]), int(match["m"])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"'{text.strip()}' is not a time of day; hours run 00-23, minutes 00-59")
    return hours * 60 + minutes


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class TimeSpan:
    """One ``days start-end`` span; ``start > end`` means it runs past midnight."""

    days: frozenset[int]
    start: int  # minutes after midnight
    end: int  # minutes after midnight, 1440 for 24:00
    text: str

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, local: datetime) -> bool:
        """``local`` must already be in the policy's time zone."""
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        if not self.crosses_midnight:
            return today in self.days and self.start <= minute < self.end
        yesterday = (today - 1) % 7
        return (today in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )

    def end_days(self) -> frozenset[int]:
        """The weekdays on which this span ends (for scheduling the end-of-window log)."""
        if self.crosses_midnight or self.end == 24 * 60:
            return frozenset((d + 1) % 7 for d in self.days)
        return self.days

    def __str__(self) -> str:
        return self.text


def parse_span(text: str) -> TimeSpan:
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"'{text.strip()}' is not a time window; {_FORMAT_HINT}")
    days = parse_days(match["days"]) if match["days"] else frozenset(range(7))
    start, end = parse_time(match["start"]), parse_time(match["end"])
    if start == 24 * 60:
        raise ValueError("a window cannot start at 24:00; use 00:00")
    if start == end:
        raise ValueError(f"'{text.strip()}' starts and ends at {_clock(start)}, so it is empty")
    return TimeSpan(days, start, end, " ".join(text.split()))


@dataclass(frozen=True)
class Window:
    """A named set of spans; active when any span contains the moment."""

    name: str
    spans: tuple[TimeSpan, ...]

    def active(self, local: datetime) -> bool:
        return any(span.contains(local) for span in self.spans)

    def describe(self) -> str:
        return ", ".join(str(s) for s in self.spans)
