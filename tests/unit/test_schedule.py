"""The scheduling layer: fires and slots across DST changes, weekdays, catch-up, and the hand-over
of each fire with its exact scheduled time."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from scheduler.clock import FrozenClock, SystemClock
from scheduler.jobs.catalog import enabled_schedules
from scheduler.schedule import (
    CATCH_UP_WINDOW,
    MISFIRE_GRACE_SECONDS,
    Schedule,
    fires_between,
    missed_fire,
    next_fire,
    slot_key,
)
from scheduler.settings import Settings
from scheduler.vocabulary import JobName

SYDNEY = ZoneInfo("Australia/Sydney")
PERTH = ZoneInfo("Australia/Perth")
# 2026 in Sydney: clocks fall back from 03:00 AEDT (+11) to 02:00 AEST (+10) on 5 April, and
# spring forward from 02:00 AEST to 03:00 AEDT on 4 October (02:00-02:59 does not exist).
FALL_BACK_DAY = (datetime(2026, 4, 5, tzinfo=SYDNEY), datetime(2026, 4, 6, tzinfo=SYDNEY))
SPRING_FORWARD_DAY = (datetime(2026, 10, 4, tzinfo=SYDNEY), datetime(2026, 10, 5, tzinfo=SYDNEY))


def fires(expression: str, tz: ZoneInfo, day: tuple[datetime, datetime]) -> list[datetime]:
    start, end = day
    return list(fires_between(expression, tz, start - timedelta(microseconds=1), end - timedelta(microseconds=1)))


def slots(expression: str, tz: ZoneInfo, day: tuple[datetime, datetime]) -> list[str]:
    return [slot_key(expression, tz, fire) for fire in fires(expression, tz, day)]


# DST ------------------------------------------------------------------------------------


def test_daily_job_fires_twice_on_the_fall_back_day_but_is_one_slot() -> None:
    expression = "0 2 * * *"
    # APScheduler 3 fires at 02:00 +11 and again at 02:00 +10, an hour apart ...
    assert [fire.astimezone(UTC) for fire in fires(expression, SYDNEY, FALL_BACK_DAY)] == [
        datetime(2026, 4, 4, 15, 0, tzinfo=UTC),
        datetime(2026, 4, 4, 16, 0, tzinfo=UTC),
    ]
    # ... and both fires are the one local 02:00 slot, so the run happens once.
    assert set(slots(expression, SYDNEY, FALL_BACK_DAY)) == {"2026-04-05T02:00"}


def test_daily_job_runs_at_the_moment_clocks_spring_forward_when_its_time_does_not_exist() -> None:
    expression = "0 2 * * *"
    (fire,) = fires(expression, SYDNEY, SPRING_FORWARD_DAY)
    # 02:00 AEST never happens: the job fires at the changeover instant, 03:00 AEDT.
    assert fire.astimezone(UTC) == datetime(2026, 10, 3, 16, 0, tzinfo=UTC)
    assert slots(expression, SYDNEY, SPRING_FORWARD_DAY) == ["2026-10-04T03:00"]


@pytest.mark.parametrize("day", [FALL_BACK_DAY, SPRING_FORWARD_DAY], ids=["fall_back", "spring_forward"])
def test_daily_job_runs_once_per_local_day_around_each_changeover(day: tuple[datetime, datetime]) -> None:
    start, end = day
    week = (start - timedelta(days=3), end + timedelta(days=3))
    per_day = Counter(slot[:10] for slot in set(slots("0 2 * * *", SYDNEY, week)))
    assert sorted(per_day) == [(start + timedelta(days=offset)).strftime("%Y-%m-%d") for offset in range(-3, 4)]
    assert set(per_day.values()) == {1}


def test_hourly_job_on_the_fall_back_day_runs_each_local_hour_once() -> None:
    expression = "0 * * * *"
    assert len(fires(expression, SYDNEY, FALL_BACK_DAY)) == 25  # a 25-hour day, one fire an hour
    keys = slots(expression, SYDNEY, FALL_BACK_DAY)
    assert len(set(keys)) == 24
    assert [key for key, count in Counter(keys).items() if count > 1] == ["2026-04-05T02:00"]


def test_hourly_job_on_the_spring_forward_day_skips_the_missing_hour() -> None:
    keys = slots("0 * * * *", SYDNEY, SPRING_FORWARD_DAY)
    assert len(keys) == len(set(keys)) == 23
    assert "2026-10-04T02:00" not in keys
    assert {"2026-10-04T01:00", "2026-10-04T03:00"} <= set(keys)


def test_a_job_more_frequent_than_hourly_runs_every_fire_of_the_repeated_hour() -> None:
    expression = "*/30 * * * *"
    keys = slots(expression, SYDNEY, FALL_BACK_DAY)
    assert len(keys) == len(set(keys)) == 50  # keyed on the instant: 02:00 +11 and 02:00 +10 both run
    assert {"2026-04-04T15:00Z", "2026-04-04T16:00Z"} <= set(keys)


def test_perth_has_no_changeover() -> None:
    day = (datetime(2026, 4, 5, tzinfo=PERTH), datetime(2026, 4, 6, tzinfo=PERTH))
    assert len(fires("0 * * * *", PERTH, day)) == 24


# Weekdays are standard cron: 0 and 7 are Sunday ----------------------------------------------


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 9 * * 1", {"Monday"}),
        ("0 9 * * 0", {"Sunday"}),
        ("0 9 * * 7", {"Sunday"}),
        ("0 9 * * 1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 9 * * sat,sun", {"Saturday", "Sunday"}),
    ],
)
def test_weekdays_follow_standard_cron(expression: str, weekdays: set[str]) -> None:
    start = datetime(2026, 11, 29, tzinfo=PERTH)  # a Sunday
    found = list(fires_between(expression, PERTH, start, start + timedelta(days=14)))
    assert {fire.astimezone(PERTH).strftime("%A") for fire in found} == weekdays
    assert all(fire.astimezone(PERTH).hour == 9 for fire in found)
    assert len(found) == 2 * len(weekdays)


# Slots ----------------------------------------------------------------------------------------


def test_slot_of_an_hourly_job_is_the_local_minute() -> None:
    fire = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert slot_key("0 * * * *", PERTH, fire) == "2026-11-29T18:00"
    assert slot_key("0 2 * * *", PERTH, fire) == "2026-11-29T18:00"


def test_slot_of_a_frequent_job_is_the_utc_instant() -> None:
    fire = datetime(2026, 11, 29, 18, 5, tzinfo=PERTH)
    assert slot_key("*/5 * * * *", PERTH, fire) == "2026-11-29T10:05Z"
    assert slot_key("* * * * *", SYDNEY, fire) == "2026-11-29T10:05Z"


def test_slot_depends_on_the_instant_only() -> None:
    instant = datetime(2026, 10, 3, 16, 0, tzinfo=UTC)
    # APScheduler hands the spring-forward fire over as a wall time that does not exist.
    nonexistent = datetime(2026, 10, 4, 2, 0, tzinfo=SYDNEY)
    assert nonexistent.astimezone(UTC) == instant
    representations = [instant, instant.astimezone(SYDNEY), instant.astimezone(PERTH), nonexistent]
    assert {slot_key("0 2 * * *", SYDNEY, when) for when in representations} == {"2026-10-04T03:00"}


# Catch-up -------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 8, 30, tzinfo=PERTH)  # 08:30 in Perth
LONG_AGO = NOW - timedelta(days=30)


def test_a_fire_within_six_hours_is_caught_up() -> None:
    assert missed_fire("0 4 * * *", PERTH, installed_at=LONG_AGO, now=NOW) == datetime(2026, 11, 29, 4, 0, tzinfo=PERTH)


def test_a_fire_more_than_six_hours_ago_is_not() -> None:
    assert missed_fire("0 2 * * *", PERTH, installed_at=LONG_AGO, now=NOW) is None
    assert missed_fire("30 2 * * *", PERTH, installed_at=LONG_AGO, now=NOW) is None  # exactly 6 h: outside


def test_only_the_latest_missed_fire_is_caught_up() -> None:
    assert missed_fire("0 * * * *", PERTH, installed_at=LONG_AGO, now=NOW) == NOW.replace(minute=0)
    assert missed_fire("*/5 * * * *", PERTH, installed_at=LONG_AGO, now=NOW) == NOW  # a fire at `now` counts


def test_nothing_before_the_installation_is_caught_up() -> None:
    assert missed_fire("0 4 * * *", PERTH, installed_at=NOW - timedelta(hours=3), now=NOW) is None
    assert missed_fire("0 4 * * *", PERTH, installed_at=NOW - timedelta(hours=5), now=NOW) is not None


def test_a_new_installation_catches_nothing_up() -> None:
    for expression in ("0 2 * * *", "0 * * * *", "*/5 * * * *", "* * * * *"):
        assert missed_fire(expression, PERTH, installed_at=NOW, now=NOW) is None


def test_catch_up_window_is_six_hours() -> None:
    assert timedelta(hours=6) == CATCH_UP_WINDOW
    assert CATCH_UP_WINDOW.total_seconds() == MISFIRE_GRACE_SECONDS


def test_catch_up_on_the_fall_back_day_finds_the_one_slot() -> None:
    now = datetime(2026, 4, 5, 4, 0, tzinfo=SYDNEY)
    fire = missed_fire("0 2 * * *", SYDNEY, installed_at=now - timedelta(days=1), now=now)
    assert fire is not None
    assert slot_key("0 2 * * *", SYDNEY, fire) == "2026-04-05T02:00"


def test_next_fire() -> None:
    assert next_fire("0 2 * * *", PERTH, NOW) == datetime(2026, 11, 30, 2, 0, tzinfo=PERTH)
    assert next_fire("off", PERTH, NOW) is None


# The APScheduler side -------------------------------------------------------------------------


def test_disabled_jobs_are_not_scheduled() -> None:
    settings = Settings(_env_file=None, schedule_cleanup_expired_otps="off", schedule_send_payment_reminders="OFF")
    schedules = enabled_schedules(settings)
    assert JobName.CLEANUP_EXPIRED_OTPS not in schedules
    assert JobName.SEND_PAYMENT_REMINDERS not in schedules
    assert schedules[JobName.DELIVER_PENDING_MESSAGES] == "*/5 * * * *"


async def test_scheduler_settings_are_explicit() -> None:
    settings = Settings(_env_file=None, timezone="Australia/Sydney", schedule_cleanup_expired_otps="off")
    schedule = Schedule(enabled_schedules(settings), settings.tz, SystemClock())
    schedule.start(lambda job, at: None)
    try:
        jobs = {job.id: job for job in schedule.scheduler.get_jobs()}
        assert set(jobs) == {job.value for job in JobName} - {"cleanup_expired_otps"}
        for job in jobs.values():
            assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (MISFIRE_GRACE_SECONDS, True, 1)
        assert schedule.scheduler.timezone == SYDNEY
        times = schedule.next_run_times()
        assert times[JobName.CLEANUP_EXPIRED_OTPS] is None
        now = datetime.now(UTC)
        assert times[JobName.DELIVER_PENDING_MESSAGES] is not None
        assert now < times[JobName.DELIVER_PENDING_MESSAGES] <= now + timedelta(minutes=5)
    finally:
        schedule.shutdown()


def test_next_runs_are_known_before_the_scheduler_starts() -> None:
    """The daemon waits for its database before it starts the schedule; the next-run gauges must
    not read 0 ("off") meanwhile."""
    now = datetime(2026, 11, 29, 10, 7, tzinfo=UTC)
    settings = Settings(_env_file=None, timezone="Australia/Sydney", schedule_cleanup_expired_otps="off")
    schedule = Schedule(enabled_schedules(settings), settings.tz, FrozenClock(now))
    times = schedule.next_run_times()
    assert not schedule.running
    assert times[JobName.CLEANUP_EXPIRED_OTPS] is None
    assert times[JobName.DELIVER_PENDING_MESSAGES] == datetime(2026, 11, 29, 10, 10, tzinfo=UTC)
    assert times[JobName.SEND_BOOKING_REMINDERS] == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


async def test_each_fire_is_handed_over_with_its_scheduled_time_and_late_ones_are_dropped() -> None:
    handed: list[tuple[JobName, datetime]] = []
    arrived = asyncio.Event()

    def on_fire(job: JobName, scheduled_for: datetime) -> None:
        handed.append((job, scheduled_for))
        arrived.set()

    yearly = "0 0 1 1 *"  # its next fire after any recent time is months away
    schedules = {JobName.CLEANUP_OLD_AUDIT_LOGS: yearly, JobName.CLEANUP_EXPIRED_OTPS: yearly}
    schedule = Schedule(schedules, SYDNEY, SystemClock())
    schedule.start(on_fire)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        recent, too_late = now - timedelta(minutes=5), now - CATCH_UP_WINDOW - timedelta(minutes=1)
        with capture_logs() as logs:
            schedule.scheduler.modify_job(JobName.CLEANUP_EXPIRED_OTPS.value, next_run_time=too_late)
            schedule.scheduler.modify_job(JobName.CLEANUP_OLD_AUDIT_LOGS.value, next_run_time=recent)
            await asyncio.wait_for(arrived.wait(), timeout=5)
        assert handed == [(JobName.CLEANUP_OLD_AUDIT_LOGS, recent)]
        assert handed[0][1].tzinfo is UTC
        assert [entry["job"] for entry in logs if entry["event"] == "fire_missed"] == ["cleanup_expired_otps"]
    finally:
        schedule.shutdown()
