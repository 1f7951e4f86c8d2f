"""Standard 5-field cron expressions turned into APScheduler 3 triggers.

APScheduler's own crontab parser numbers weekdays from Monday (0) and rejects 7, and it
ANDs day-of-month with day-of-week where cron ORs them. Operators write standard cron, so
this module translates rather than passing the text through.
"""

from __future__ import annotations

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


def standard_weekdays(field: str) -> str:
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


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# The five fields: name, smallest and largest value, and the names cron accepts for values.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _WEEKDAY_NAMES),
)
_FIELD_SHAPE = "a number, a range (1-5), a list (1,3), a step (*/15) or *"


def _field_value(field: str, token: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token in names:
        return names.index(token) + (1 if names is _MONTH_NAMES else 0)
    if not token.isdigit():
        raise CronError(f"{field} field {token!r} is not {_FIELD_SHAPE}")
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{field} field value {value} is out of range {low}-{high}")
    return value


def _check_field(field: str, text: str, low: int, high: int, names: tuple[str, ...]) -> None:
    """Raise CronError naming the field, and its range when a value lies outside it."""
    for part in text.split(","):
        body, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise CronError(f"{field} field step {step!r} is not a positive number")
        if body == "*":
            continue
        first_text, dash, last_text = body.partition("-")
        first = _field_value(field, first_text, low, high, names)
        if dash:
            last = _field_value(field, last_text, low, high, names)
            if last < first:
                raise CronError(f"{field} field range {body} runs backwards")


def validate(expression: str) -> str:
    """Return the expression normalised (single spaces, lower case) or raise CronError."""
    text = " ".join(expression.split()).lower()
    if text == OFF:
        return OFF
    if len(text.split(" ")) != 5:
        raise CronError(f"{expression!r} is not a 5-field cron expression (minute hour day month weekday) or 'off'")
    for (field, low, high, names), text_field in zip(_FIELDS, text.split(" "), strict=True):
        _check_field(field, text_field, low, high, names)
    _, _, day, month, _ = text.split(" ")
    if day == "*" or month == "*":
        # Every field is in range: with any day of the month, or in every month, a time always comes.
        # (Most schedules, the defaults included: no trigger to build, APScheduler not even loaded.)
        return text
    from scheduler.triggers import fires_ever  # APScheduler, only for the rare dated schedule

    if not fires_ever(text):
        # "0 0 31 2 *" parses but names a day that never comes: the job would silently never run.
        raise CronError(f"{expression!r} never fires (no such date); use 'off' to disable a job")
    return text


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
    if with_seconds(expression):  # seconds first (tests): fires on the real clock, every minute or more
        return True
    minute, hour = expression.split(" ")[:2]
    return minute.startswith("*") or _hours(hour) == HOURS_IN_A_DAY


def fires_at_most_hourly(expression: str) -> bool:
    """True when the minute field names one minute, so the job fires at most once an hour."""
    if with_seconds(expression):
        return False
    minute = expression.split(" ", maxsplit=1)[0]
    return minute.isdigit()


def with_seconds(expression: str) -> bool:
    """A schedule with a leading field of seconds (tests and benchmarks only; see triggers.py)."""
    return len(expression.split(" ")) == 6
