"""Schedule windows: midnight crossing, minute-before/after boundaries, DST in Europe/Berlin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moodgate.policy import PolicyScheduler, parse_policy
from moodgate.policy.schedule import TimeSpan, parse_days, parse_span

BERLIN = ZoneInfo("Europe/Berlin")
DAY = 24 * 60


def reference_minutes(span: TimeSpan) -> set[tuple[int, int]]:
    """Every (weekday, minute) the span covers, by enumeration: independent of contains()."""
    length = (span.end - span.start) % DAY or DAY
    if span.end == DAY:
        length = DAY - span.start
    covered = set()
    for day in span.days:
        for offset in range(length):
            minute = span.start + offset
            covered.add(((day + minute // DAY) % 7, minute % DAY))
    return covered


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
spans = (
    st.tuples(st.sets(st.integers(0, 6), min_size=1), st.integers(0, DAY - 1), st.integers(1, DAY))
    .filter(lambda t: t[1] != t[2])
    .map(
        lambda t: parse_span(
            f"{','.join(WEEK[d] for d in sorted(t[0]))} {clock(t[1])}-{clock(t[2])}"
        )
    )
)


@settings(max_examples=200, deadline=None)
@given(
    span=spans,
    at=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(BERLIN)
    ),
)
def test_span_matches_enumerated_reference(span: TimeSpan, at: datetime) -> None:
    local = at.astimezone(BERLIN)
    expected = (local.weekday(), local.hour * 60 + local.minute) in reference_minutes(span)
    assert span.contains(local) is expected


@settings(max_examples=200, deadline=None)
@given(span=spans, week_day=st.integers(0, 6))
def test_minute_before_and_after_each_boundary(span: TimeSpan, week_day: int) -> None:
    monday = datetime(2026, 11, 23, tzinfo=BERLIN)  # an ordinary week, no DST change
    day = monday + timedelta(days=week_day)
    start = day + timedelta(minutes=span.start)
    end_day = day + timedelta(days=1) if span.crosses_midnight else day
    end = end_day + timedelta(minutes=span.end % DAY if span.crosses_midnight else span.end)
    starts_today = week_day in span.days
    if starts_today:
        assert span.contains(start)
        assert span.contains(end - timedelta(minutes=1))
    covered = reference_minutes(span)
    for moment in (start - timedelta(minutes=1), end):
        key = (moment.weekday(), moment.hour * 60 + moment.minute)
        assert span.contains(moment) is (key in covered)


@settings(max_examples=300, deadline=None)
@given(span=spans, minute=st.integers(0, 2 * 25 * 60))
def test_dst_days_follow_the_wall_clock(span: TimeSpan, minute: int) -> None:
    """Across both 2026 Berlin DST changes, membership is decided by local wall time."""
    for change in (
        datetime(2026, 3, 28, 22, 0, tzinfo=UTC),
        datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
    ):
        local = (change + timedelta(minutes=minute)).astimezone(BERLIN)
        expected = (local.weekday(), local.hour * 60 + local.minute) in reference_minutes(span)
        assert span.contains(local) is expected


BEDTIME = """\
timezone: Europe/Berlin
children:
  mia:
    devices: [10.0.0.2]
    schedule:
      bedtime:
        when: mon-fri 20:00-07:00
      early:
        when: sun 01:30-02:30
"""


@pytest.mark.parametrize(
    ("local", "window"),
    [
        ("2026-11-27 19:59", None),  # Fri, the minute before
        ("2026-11-27 20:00", "bedtime"),
        ("2026-11-28 00:00", "bedtime"),  # past midnight into Saturday
        ("2026-11-28 06:59", "bedtime"),
        ("2026-11-28 07:00", None),  # the minute after
        ("2026-11-28 20:00", None),  # Saturday night is not listed
        ("2026-11-30 06:59", None),  # Monday morning: Sunday night was not listed
        ("2026-11-30 20:00", "bedtime"),
        ("2026-12-01 06:59", "bedtime"),
    ],
)
def test_policy_windows_at_boundaries(local: str, window: str | None) -> None:
    policy = parse_policy(BEDTIME)
    at = datetime.fromisoformat(local).replace(tzinfo=BERLIN)
    assert policy.profile_named("mia", at).window == window
    assert policy.profile_named("mia", at.astimezone(UTC)).window == window


def test_spring_forward_shortens_the_window() -> None:
    policy = parse_policy(BEDTIME)
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so "sun 01:30-02:30" lasts 30 real minutes.
    assert policy.profile_named("mia", datetime(2026, 3, 29, 0, 59, tzinfo=UTC)).window == "early"
    assert policy.profile_named("mia", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).window is None


def test_fall_back_repeats_the_hour() -> None:
    policy = parse_policy(BEDTIME)
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:15 happens twice, both in the window.
    first = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
    assert first.astimezone(BERLIN).hour == second.astimezone(BERLIN).hour == 2
    assert policy.profile_named("mia", first).window == "early"
    assert policy.profile_named("mia", second).window == "early"
    assert policy.profile_named("mia", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)).window is None


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sat,sun", {5, 6}),
        ("daily", set(range(7))),
        ("weekends", {5, 6}),
        ("Monday,wed-thu", {0, 2, 3}),
    ],
)
def test_day_specs(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


def test_span_without_days_means_daily_and_24_00_is_an_end() -> None:
    span = parse_span("12:00-24:00")
    assert span.days == frozenset(range(7)) and not span.crosses_midnight
    assert span.contains(datetime(2026, 1, 1, 23, 59, tzinfo=BERLIN))
    assert span.end_days() == frozenset(range(7))


def test_scheduler_jobs_for_windows_and_nightly() -> None:
    switches: list[tuple[str, str, str]] = []
    scheduler = PolicyScheduler(timezone=BERLIN, on_switch=lambda *a: switches.append(a))
    scheduler.start()
    try:
        scheduler.add_nightly("retention", lambda: None, hour=3)
        scheduler.set_policy(parse_policy(BEDTIME))
        ids = set(scheduler.job_ids())
        assert "nightly:retention" in ids
        assert {"window:mia:bedtime:0:start", "window:mia:bedtime:0:end"} <= ids
        job = scheduler.scheduler.get_job("window:mia:bedtime:0:end")
        # Bedtime starting Fri ends Sat 07:00; the end job runs tue-sat.
        fired = job.trigger.get_next_fire_time(None, datetime(2026, 11, 28, 6, 0, tzinfo=BERLIN))
        assert fired == datetime(2026, 11, 28, 7, 0, tzinfo=BERLIN)
        fired = job.trigger.get_next_fire_time(None, datetime(2026, 11, 29, 8, 0, tzinfo=BERLIN))
        assert fired == datetime(2026, 12, 1, 7, 0, tzinfo=BERLIN)  # not Sunday or Monday
        nightly = scheduler.scheduler.get_job("nightly:retention")
        assert nightly.next_run_time.hour == 3
        # A reload replaces window jobs but leaves nightly jobs alone.
        scheduler.set_policy(parse_policy("default: {preset: teen}\n"))
        assert scheduler.job_ids() == ["nightly:retention"]
        scheduler._announce("mia", "bedtime", "start")
        assert switches == [("mia", "bedtime", "start")]
    finally:
        scheduler.shutdown()
