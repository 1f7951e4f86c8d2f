"""Standard 5-field cron expressions turned into APScheduler 3 triggers.

APScheduler's own crontab parser numbers weekdays from Monday (0) and rejects 7, and it
ANDs day-of-month with day-of-week where cron ORs them. Operators write standard cron, so
this module translates rather than passing the text through.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
OFF = "off"


class CronError(ValueError):
    """An expression that is not standard 5-field cron."""


def _weekday_number(token: str) -> int:
    token = token.strip().lower()
    if token in _WEEKDAY_NAMES:
        return _WEEKDAY_NAMES.index(token)
    if not token.isdigit() or not 0 <= int(token) <= 7:
        raise CronError(f"day of week {token!r} is not 0-7 or sun-sat")
    return int(token) % 7


def _standard_weekdays(field: str) -> str:
    """Rewrite a standard day-of-week field (0 and 7 = Sunday) as APScheduler weekday names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"day of week step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            start_text, _, end_text = body.partition("-")
            first, last = _weekday_number(start_text), _weekday_number(end_text)
            if end_text.strip() == "7":
                last = 7
            if last < first:
                raise CronError(f"day of week range {body!r} runs backwards")
        else:
            first = last = _weekday_number(body)
            if step_text:
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_WEEKDAY_NAMES[day] for day in sorted(days))


def validate(expression: str) -> str:
    """Return the expression normalised (single spaces, lower case) or raise CronError."""
    text = " ".join(expression.split()).lower()
    if text == OFF:
        return OFF
    if len(text.split(" ")) != 5:
        raise CronError(f"{expression!r} is not a 5-field cron expression (minute hour day month weekday) or 'off'")
    from zoneinfo import ZoneInfo

    trigger = build_trigger(text, ZoneInfo("UTC"))
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        # "0 0 31 2 *" parses but names a day that never comes: the job would silently never run.
        raise CronError(f"{expression!r} never fires (no such date); use 'off' to disable a job")
    return text


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


def _with_seconds(expression: str) -> bool:
    return len(expression.split(" ")) == 6


def _cron_trigger(expression: str, timezone: tzinfo) -> BaseTrigger:
    fields = expression.split(" ")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    try:
        weekdays = _standard_weekdays(weekday)
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


HOURS_IN_A_DAY = frozenset(range(24))


def _hours(field: str) -> frozenset[int]:
    """The hours a standard hour field names (`*`, `a`, `a-b`, any with `/step`, comma-separated)."""
    hours: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else 1
        if body == "*":
            first, last = 0, 23
        elif "-" in body:
            start_text, _, end_text = body.partition("-")
            if not (start_text.isdigit() and end_text.isdigit()):
                return frozenset()
            first, last = int(start_text), int(end_text)
        elif body.isdigit():
            first = int(body)
            last = 23 if step_text else first
        else:
            return frozenset()  # not standard cron: treated as a fixed time, the cautious reading
        hours.update(range(first, last + 1, step))
    return frozenset(hours & HOURS_IN_A_DAY)


def is_wildcard(expression: str) -> bool:
    """True for what Vixie cron calls a wildcard job: its minute field starts with `*` (`*`, `*/5`)
    or its hour field names every hour (`*`, `*/1`, `0-23`).

    A wildcard job runs whenever the real clock matches, so on the night clocks go back it also
    runs in the repeated hour (an hourly job runs 25 times that day). Every other job is a
    fixed-time job: it runs once per local time it names, however often that time occurs.
    (Vixie also counts `*/2` in the hour field as a wildcard; here a job every other hour names
    fixed local times, so its repeated 02:00 runs once.)
    """
    if _with_seconds(expression):  # seconds first (tests): fires on the real clock, every minute or more
        return True
    minute, hour = expression.split(" ")[:2]
    return minute.startswith("*") or _hours(hour) == HOURS_IN_A_DAY


def fires_at_most_hourly(expression: str) -> bool:
    """True when the minute field names one minute, so the job fires at most once an hour."""
    if _with_seconds(expression):
        return False
    minute = expression.split(" ", maxsplit=1)[0]
    return minute.isdigit()
