"""Standard 5-field cron expressions turned into APScheduler 3 triggers.

APScheduler's own crontab parser numbers weekdays from Monday (0) and rejects 7, and it
ANDs day-of-month with day-of-week where cron ORs them. Operators write standard cron, so
this module translates rather than passing the text through.
"""

from __future__ import annotations

from datetime import tzinfo

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
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    trigger = build_trigger(text, ZoneInfo("UTC"))
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        # "0 0 31 2 *" parses but names a day that never comes: the job would silently never run.
        raise CronError(f"{expression!r} never fires (no such date); use 'off' to disable a job")
    return text


def build_trigger(expression: str, timezone: tzinfo) -> BaseTrigger:
    """The APScheduler trigger that fires when the standard cron expression does.

    A sixth, leading field of seconds is accepted here (never from the settings, which take five):
    tests and benchmarks schedule in seconds instead of waiting for real minutes.
    """
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


def fires_at_most_hourly(expression: str) -> bool:
    """True when the minute field names one minute, so the job fires at most once an hour.

    Such jobs run once per local wall-clock slot: on the day clocks fall back, 02:00 happens
    twice but is one slot. More frequent jobs are keyed on the instant instead.
    """
    fields = expression.split(" ")
    if len(fields) == 6:  # seconds first: fires every minute at least
        return False
    return fields[0].isdigit()
