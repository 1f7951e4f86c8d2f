"""The values an operator types after `--since` and `--limit`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo

MAX_LIMIT = 10_000  # a screen holds 50; a script that wants more pages with --since
_AGO = re.compile(r"(\d+)\s*(m|min|h|d|w)")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadValue(ValueError):
    """A value the command cannot read; the message says what it accepts."""


def parse_since(text: str, *, now: datetime, tz: tzinfo) -> datetime:
    """`30m`, `6h`, `2d`, `1w` ago; `today`, `yesterday` (midnight in TIMEZONE); or a date or
    date and time (`2026-12-01`, `2026-12-01 18:00`, ISO with an offset), local to TIMEZONE
    unless it names its offset."""
    value = text.strip().lower()
    ago = _AGO.fullmatch(value)
    if ago:
        return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "today":
        return midnight
    if value == "yesterday":
        return (midnight - timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=tz)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadValue(
            f"--since {text!r}: give a time ago (30m, 6h, 2d, 1w), today, yesterday, "
            "or a date and time (2026-12-01, '2026-12-01 18:00')"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def parse_limit(text: str) -> int:
    """A number of rows, 1 to MAX_LIMIT."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadValue(f"--limit {text!r}: give a whole number from 1 to {MAX_LIMIT}")
    return int(text)
