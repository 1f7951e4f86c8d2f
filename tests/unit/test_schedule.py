"""The scheduling layer: fires and slots across DST changes, weekdays, catch-up, and the hand-over
of each fire with its exact scheduled time."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from scheduler import cron
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
from scheduler.settings import Settings, SettingsError, load_settings
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


def test_hourly_job_on_the_fall_back_day_runs_every_real_hour() -> None:
    expression = "0 * * * *"
    assert len(fires(expression, SYDNEY, FALL_BACK_DAY)) == 25  # a 25-hour day, one fire an hour
    keys = slots(expression, SYDNEY, FALL_BACK_DAY)
    assert len(set(keys)) == 25  # as Vixie cron runs a wildcard-hour job: the repeated 02:00 runs too
    # The first 02:00 keeps the ordinary key; only the repeat carries its offset.
    assert {"2026-04-05T02:00", "2026-04-05T02:00+10:00"} <= set(keys)


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


# Vixie cron on the DST nights of three zones ----------------------------------------------------
# 2026: each zone falls back on 5 April and springs forward on 4 October. Sydney and Adelaide
# (+10:30/+9:30) repeat or skip 02:00-02:59; Lord Howe's shift is 30 minutes: it falls back
# from 02:00 (+11) to 01:30 (+10:30), repeating 01:30-01:59, and springs from 02:00 to 02:30.
ADELAIDE = ZoneInfo("Australia/Adelaide")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def local_day(tz: ZoneInfo, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, day, tzinfo=tz)
    return start, start + timedelta(days=1)


DST_NIGHTS = {
    "sydney_fall_back": (SYDNEY, local_day(SYDNEY, 2026, 4, 5)),
    "sydney_spring_forward": (SYDNEY, local_day(SYDNEY, 2026, 10, 4)),
    "adelaide_fall_back": (ADELAIDE, local_day(ADELAIDE, 2026, 4, 5)),
    "adelaide_spring_forward": (ADELAIDE, local_day(ADELAIDE, 2026, 10, 4)),
    "lord_howe_fall_back": (LORD_HOWE, local_day(LORD_HOWE, 2026, 4, 5)),
    "lord_howe_spring_forward": (LORD_HOWE, local_day(LORD_HOWE, 2026, 10, 4)),
}
# (night, expression, runs that day): wildcard jobs run whenever the real clock matches, fixed-time
# jobs once per local time they name.
EXPECTED_RUNS = [
    # A 25-hour day: every real hour, the repeated 02:00 included.
    ("sydney_fall_back", "0 * * * *", 25),
    ("sydney_fall_back", "30 * * * *", 25),
    ("sydney_fall_back", "0 */1 * * *", 25),
    ("sydney_fall_back", "0 0-23 * * *", 25),
    ("sydney_fall_back", "0 0-11,12-23 * * *", 25),
    ("sydney_fall_back", "*/30 * * * *", 50),
    ("sydney_fall_back", "*/15 2 * * *", 8),  # a wildcard minute runs in both 02:00 hours, as in Vixie cron
    ("sydney_fall_back", "0 2 * * *", 1),
    ("sydney_fall_back", "30 2 * * *", 1),
    ("sydney_fall_back", "0,30 2 * * *", 2),
    ("sydney_fall_back", "0 1-3 * * *", 3),
    ("sydney_fall_back", "0 */2 * * *", 12),  # fixed local times: its 02:00 once
    ("sydney_fall_back", "30 3 * * *", 1),
    # A 23-hour day: 02:00-02:59 never happens; a fixed time in it runs once, at or after the change.
    ("sydney_spring_forward", "0 * * * *", 23),
    ("sydney_spring_forward", "*/30 * * * *", 46),
    ("sydney_spring_forward", "0 2 * * *", 1),
    ("sydney_spring_forward", "30 2 * * *", 1),
    ("sydney_spring_forward", "59 2 * * *", 1),
    ("sydney_spring_forward", "0 3 * * *", 1),
    ("sydney_spring_forward", "0,30 2 * * *", 2),  # both skipped times, at 03:00 and 03:30 (APScheduler lost 02:30)
    ("sydney_spring_forward", "0 2,3 * * *", 1),  # the skipped 02:00 and 03:00 are one instant: one run
    ("adelaide_fall_back", "0 * * * *", 25),
    ("adelaide_fall_back", "30 * * * *", 25),
    ("adelaide_fall_back", "*/5 * * * *", 300),
    ("adelaide_fall_back", "0 2 * * *", 1),
    ("adelaide_fall_back", "30 2 * * *", 1),
    ("adelaide_spring_forward", "0 * * * *", 23),
    ("adelaide_spring_forward", "0 2 * * *", 1),
    ("adelaide_spring_forward", "30 2 * * *", 1),
    ("adelaide_spring_forward", "15,45 2 * * *", 2),
    # Lord Howe: 24.5 hours. No :00 wall time repeats, 01:30 does.
    ("lord_howe_fall_back", "0 * * * *", 24),
    ("lord_howe_fall_back", "30 * * * *", 25),
    ("lord_howe_fall_back", "*/15 * * * *", 98),
    ("lord_howe_fall_back", "45 1 * * *", 1),
    ("lord_howe_fall_back", "0 2 * * *", 1),
    # 23.5 hours: 02:00-02:29 never happens, 02:30 does.
    ("lord_howe_spring_forward", "0 * * * *", 23),
    ("lord_howe_spring_forward", "30 * * * *", 24),
    ("lord_howe_spring_forward", "*/15 * * * *", 94),
    ("lord_howe_spring_forward", "0 2 * * *", 1),
    ("lord_howe_spring_forward", "15 2 * * *", 1),
    ("lord_howe_spring_forward", "30 2 * * *", 1),
    ("lord_howe_spring_forward", "0,15 2 * * *", 2),  # 02:00 at the change (02:30), 02:15 at 02:45
    ("lord_howe_spring_forward", "0,30 2 * * *", 1),  # the skipped 02:00 is 02:30 itself: one instant
]


@pytest.mark.parametrize(("night", "expression", "runs"), EXPECTED_RUNS)
def test_dst_nights_run_wildcard_jobs_every_real_time_and_fixed_times_once(
    night: str, expression: str, runs: int
) -> None:
    tz, day = DST_NIGHTS[night]
    keys = slots(expression, tz, day)
    assert len(set(keys)) == runs, Counter(keys).most_common(3)


@pytest.mark.parametrize("night", [name for name in DST_NIGHTS if name.endswith("fall_back")])
def test_an_hourly_job_runs_an_hour_apart_through_the_night_clocks_go_back(night: str) -> None:
    tz, day = DST_NIGHTS[night]
    by_slot = {slot_key("0 * * * *", tz, fire): fire.astimezone(UTC) for fire in fires("0 * * * *", tz, day)}
    instants = sorted(by_slot.values())
    gaps = {later - earlier for earlier, later in itertools.pairwise(instants)}
    if tz is LORD_HOWE:  # 01:00 +11 to 02:00 +10:30 is 90 real minutes: no :00 in between
        assert gaps == {timedelta(hours=1), timedelta(minutes=90)}
    else:
        assert gaps == {timedelta(hours=1)}


@pytest.mark.parametrize("night", [name for name in DST_NIGHTS if name.endswith("spring_forward")])
@pytest.mark.parametrize("minute", [0, 15, 29])
def test_a_fixed_time_in_the_skipped_hour_runs_once_soon_after_the_change(night: str, minute: int) -> None:
    tz, day = DST_NIGHTS[night]
    expression = f"{minute} 2 * * *"
    (fire,) = fires(expression, tz, day)
    changeover = datetime(2026, 10, 4, 2, 0, tzinfo=tz).astimezone(UTC)  # the non-existent 02:00 is the change
    assert changeover <= fire.astimezone(UTC) < changeover + timedelta(hours=1)
    assert len(set(slots(expression, tz, day))) == 1


def test_every_skipped_time_of_a_job_runs_once_in_order() -> None:
    tz, day = DST_NIGHTS["sydney_spring_forward"]
    instants = [fire.astimezone(UTC) for fire in fires("0,20,40 2 * * *", tz, day)]
    # 02:00, 02:20 and 02:40 AEST never happen: they run at 03:00, 03:20 and 03:40 AEDT.
    assert instants == [datetime(2026, 10, 3, 16, minute, tzinfo=UTC) for minute in (0, 20, 40)]
    assert next_fire("0,20,40 2 * * *", tz, instants[-1] + timedelta(seconds=1)) == datetime(
        2026, 10, 5, 2, 0, tzinfo=tz
    )


def test_the_repeated_hour_s_key_depends_on_the_instant_only() -> None:
    instant = datetime(2026, 4, 4, 16, 0, tzinfo=UTC)  # 02:00 +10, the second 02:00 in Sydney
    representations = [
        instant,
        instant.astimezone(SYDNEY),
        instant.astimezone(PERTH),
        datetime(2026, 4, 5, 2, 0, fold=1, tzinfo=SYDNEY),
    ]
    assert {slot_key("0 * * * *", SYDNEY, when) for when in representations} == {"2026-04-05T02:00+10:00"}
    first = datetime(2026, 4, 5, 2, 0, fold=0, tzinfo=SYDNEY)
    assert slot_key("0 * * * *", SYDNEY, first) == "2026-04-05T02:00"
    assert slot_key("0 2 * * *", SYDNEY, instant) == slot_key("0 2 * * *", SYDNEY, first) == "2026-04-05T02:00"


@pytest.mark.parametrize(
    ("expression", "wildcard"),
    [
        ("0 * * * *", True),
        ("*/5 * * * *", True),
        ("* 2 * * *", True),
        ("*/15 2 * * *", True),
        ("0 */1 * * *", True),
        ("0 0-23 * * *", True),
        ("0 0-23/1 * * *", True),
        ("0 0-11,12-23 * * *", True),
        ("0,30 * * * *", True),
        ("0 2 * * *", False),
        ("30 2 * * *", False),
        ("0,30 2 * * *", False),
        ("0 */2 * * *", False),
        ("0 1-23 * * *", False),
        ("0 0-23/2 * * *", False),
        ("5-10 3 * * *", False),
    ],
)
def test_wildcard_jobs_are_told_from_fixed_time_jobs(expression: str, wildcard: bool) -> None:
    assert cron.is_wildcard(expression) is wildcard


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


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute field value 61 is out of range 0-59"),
        ("0 24 * * *", "hour field value 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month field value 0 is out of range 1-31"),
        ("0 0 32 * *", "day of month field value 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field value 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week field value 8 is out of range 0-7"),
        ("0 1-60/5 * * *", "hour field value 60 is out of range 0-23"),
        ("5x * * * *", "minute field '5x' is not a number"),
        ("*/0 * * * *", "minute field step '0' is not a positive number"),
        ("0 5-2 * * *", "hour field range 5-2 runs backwards"),
    ],
)
def test_cron_errors_name_the_field_and_its_range(expression: str, message: str) -> None:
    with pytest.raises(cron.CronError) as raised:
        cron.validate(expression)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "expression", ["0 0 * jan-mar mon-fri", "59 23 31 12 7", "1,2 */4 1-15/2 * sun", "0 2 * * 0-7"]
)
def test_cron_accepts_names_lists_ranges_and_steps(expression: str) -> None:
    assert cron.validate(expression) == expression


def test_cron_error_in_settings_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULE_SEND_BOOKING_REMINDERS", "61 * * * *")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert str(raised.value) == "SCHEDULE_SEND_BOOKING_REMINDERS: minute field value 61 is out of range 0-59"
