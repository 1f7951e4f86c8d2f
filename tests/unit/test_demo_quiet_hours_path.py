"""The demo's quiet-hours path: which reminder run it replays, the event it gives the booking,
and the banner's lines about it (scheduler/demo/last_night.py, scheduler/demo/banner.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.demo.banner import banner
from scheduler.demo.last_night import LOOKBACK, HeldPath, quiet_hours_path
from scheduler.settings import Settings

PERTH = ZoneInfo("Australia/Perth")
SYDNEY = ZoneInfo("Australia/Sydney")


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("now", "run_at"),
    [
        (datetime(2026, 12, 2, 14, 23, tzinfo=PERTH), datetime(2026, 12, 2, 7, 0, tzinfo=PERTH)),  # by day
        (datetime(2026, 12, 2, 8, 0, tzinfo=PERTH), datetime(2026, 12, 2, 7, 0, tzinfo=PERTH)),  # 08:00 is not quiet
        (datetime(2026, 12, 2, 20, 59, tzinfo=PERTH), datetime(2026, 12, 2, 7, 0, tzinfo=PERTH)),  # the evening
        (datetime(2026, 12, 2, 21, 0, tzinfo=PERTH), datetime(2026, 12, 2, 21, 0, tzinfo=PERTH)),  # first quiet fire
        (datetime(2026, 12, 3, 2, 40, tzinfo=PERTH), datetime(2026, 12, 3, 2, 0, tzinfo=PERTH)),  # in the night
    ],
)
def test_the_latest_reminder_run_in_the_quiet_hours(now: datetime, run_at: datetime) -> None:
    path = quiet_hours_path(settings(), now.astimezone(UTC))
    assert path is not None
    assert path.run_at == run_at and path.run_at.tzinfo is UTC
    # Due just before that run, not at the hourly run before it, and still 3 hours away at `now`.
    assert run_at + timedelta(hours=23) < path.event_date <= run_at + timedelta(hours=24)
    assert path.event_date - now > timedelta(hours=3)


def test_the_event_stays_ahead_of_any_start_within_the_lookback() -> None:
    # Quiet hours of one hour a day: the run replayed may lie almost LOOKBACK back.
    now = datetime(2026, 12, 2, 23, 59, tzinfo=PERTH)
    path = quiet_hours_path(settings(quiet_hours="04:00-05:00"), now)
    assert path is not None and path.run_at == datetime(2026, 12, 2, 4, 0, tzinfo=PERTH)
    assert now - path.run_at <= LOOKBACK and path.event_date - now > timedelta(hours=3)
    assert quiet_hours_path(settings(quiet_hours="04:00-05:00"), now + timedelta(hours=1)) is None  # 21 h back


def test_the_schedule_and_the_time_zone_of_the_settings_decide() -> None:
    now = datetime(2026, 12, 2, 12, 10, tzinfo=SYDNEY)
    every_20 = settings(timezone="Australia/Sydney", schedules={"send_booking_reminders": "*/20 * * * *"})
    path = quiet_hours_path(every_20, now)
    assert path is not None and path.run_at == datetime(2026, 12, 2, 7, 40, tzinfo=SYDNEY)


@pytest.mark.parametrize(
    "values",
    [
        {"quiet_hours": "off"},
        {"schedules": {"send_booking_reminders": "off"}},  # the daemon would not have run it
        # an event due just before the run would be within REMINDER_MIN_LEAD_MINUTES of it
        {"booking_reminder_hours": 1, "reminder_min_lead_minutes": 50},
    ],
)
def test_no_path_where_the_daemon_would_have_held_nothing(values: dict[str, Any]) -> None:
    assert quiet_hours_path(settings(**values), datetime(2026, 12, 2, 14, 0, tzinfo=PERTH)) is None


def test_the_banner_names_the_held_booking_and_its_trail() -> None:
    held = HeldPath("FE-DEMO-10", datetime(2026, 12, 1, 23, 0, tzinfo=UTC), {"sent": 2})
    text = banner(
        host="0.0.0.0", port=9464, timezone="Australia/Perth", messages={}, held=held, quiet_hours="21:00-08:00"
    )
    assert "FE-DEMO-10: its reminder fell due at 07:00 in the quiet hours (21:00-08:00)" in text
    assert "now 2 sent" in text and "flavor-scheduler --demo messages --booking FE-DEMO-10" in text
    assert all(len(line) <= 100 for line in text.splitlines() if "FE-DEMO-10" in line)  # fits a terminal
    assert "held " not in banner(host="::", port=9464, timezone="Australia/Perth", messages={})
