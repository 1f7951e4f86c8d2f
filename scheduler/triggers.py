"""Cron expressions as APScheduler triggers: the one module of ours that builds them (APScheduler
is loaded only where a trigger is needed: the daemon's schedule, --list-jobs, a dated schedule's
check)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from scheduler.cron import CronError, standard_weekdays


class _SkippedTimesTrigger(BaseTrigger):  # type: ignore[misc]
    """A cron trigger that also fires the job's later times in an hour the clocks skipped.

    APScheduler fires a time that does not exist (02:00 on the night clocks spring forward) at the
    changeover, then steps on from that instant, which is already past the rest of the skipped
    hour: `0,30 2 * * *` lost its 02:30. After such a fire this finds the next wall time on a
    clock without DST (the same expression in UTC, read as wall time), so every time the job
    names in the skipped hour runs once (02:30 at 03:30).
    """

    def __init__(self, inner: BaseTrigger, wall_clock: BaseTrigger) -> None:
        self.inner = inner
        self.wall_clock = wall_clock

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None or _exists(previous_fire_time):
            fire: datetime | None = self.inner.get_next_fire_time(previous_fire_time, now)
            return fire
        wall = previous_fire_time.replace(tzinfo=UTC)
        following: datetime | None = self.wall_clock.get_next_fire_time(wall, wall)
        return None if following is None else following.replace(tzinfo=previous_fire_time.tzinfo)

    def __str__(self) -> str:
        return str(self.inner)


def _exists(wall: datetime) -> bool:
    """False for a local time the clocks skipped (its round trip through UTC lands elsewhere)."""
    tz = wall.tzinfo
    return wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None)


def build_trigger(expression: str, timezone: tzinfo) -> BaseTrigger:
    """The APScheduler trigger that fires when the standard cron expression does.

    A sixth, leading field of seconds is accepted here (never from the settings, which take five):
    tests and benchmarks schedule in seconds instead of waiting for real minutes.
    """
    return _SkippedTimesTrigger(_cron_trigger(expression, timezone), _cron_trigger(expression, UTC))


def _cron_trigger(expression: str, timezone: tzinfo) -> BaseTrigger:
    fields = expression.split(" ")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    try:
        weekdays = standard_weekdays(weekday)
        common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": timezone}
        if day != "*" and weekday != "*":
            # Cron fires when either the day of month or the weekday matches.
            return OrTrigger(
                [
                    CronTrigger(day=day, **common),
                    CronTrigger(day_of_week=weekdays, **common),
                ]
            )
        return CronTrigger(day=day, day_of_week=weekdays, **common)
    except CronError:
        raise
    except ValueError as exc:
        raise CronError(f"{expression!r}: {exc}") from exc


def fires_ever(expression: str) -> bool:
    """False for an expression that names a day that never comes (`0 0 31 2 *`)."""
    from zoneinfo import ZoneInfo

    return build_trigger(expression, ZoneInfo("UTC")).get_next_fire_time(None, datetime.now(UTC)) is not None
