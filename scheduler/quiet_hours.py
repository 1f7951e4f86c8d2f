"""Quiet hours (QUIET_HOURS, CONTRACT §2): the local hours of the night when WhatsApp, SMS and
email wait, and the instant a quiet period ends, exact across daylight-saving changes.

Pure time arithmetic: the wall clock in TIMEZONE decides whether it is quiet, and the end is
returned as an absolute UTC instant, so whichever replica sends a held message agrees on when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

OFF = "off"
_WINDOW = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")
# The longest a zone has ever skipped at once (Samoa, 30 December 2011): the search for the
# end of a quiet period that falls into a skipped stretch of wall time looks this far.
_LONGEST_GAP = timedelta(days=1)


class QuietHoursError(ValueError):
    """QUIET_HOURS is not `HH:MM-HH:MM` or `off`; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class QuietHours:
    """From `start` (included) to `end` (excluded), local wall-clock time; may cross midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, value: str) -> QuietHours | None:
        """`21:00-08:00` → QuietHours; `off` → None."""
        if value.strip().lower() == OFF:
            return None
        match = _WINDOW.fullmatch(value)
        if match is None:
            raise QuietHoursError(f"must be HH:MM-HH:MM in 24-hour time (e.g. 21:00-08:00) or {OFF}")
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        if start_h > 23 or end_h > 23 or start_m > 59 or end_m > 59:
            raise QuietHoursError("hours run from 00 to 23 and minutes from 00 to 59")
        start, end = time(start_h, start_m), time(end_h, end_m)
        if start == end:
            raise QuietHoursError(f"start and end are both {start:%H:%M}; give a real window or {OFF}")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def covers(self, wall: time) -> bool:
        """Whether this local wall-clock time is quiet."""
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end  # across midnight

    def ends_after(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """When the quiet period `now` falls in ends (UTC), or None when `now` is not quiet.

        The end is the first instant after `now` whose wall time in `tz` is the window's end: on
        the night clocks go back, the first of the two; where the end falls into wall time the
        clocks skip, the moment they skip past it.
        """
        if now.tzinfo is None:
            raise ValueError("ends_after needs a timezone-aware `now`")
        local = now.astimezone(tz)
        if not self.covers(local.time().replace(tzinfo=None)):
            return None
        for day in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(days=1)):
            end = _first_instant_at(day, self.end, tz)
            if end > now:
                return end
        raise AssertionError("a quiet period always ends within a day")  # pragma: no cover


def _first_instant_at(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first instant at which the wall clock in `tz` reads `wall` on `day`, or, if the clocks
    skip that reading (spring forward), the moment they jump past it."""
    naive = datetime.combine(day, wall)
    earlier = naive.replace(tzinfo=tz, fold=0)
    instant = earlier.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == naive:
        return instant  # the reading exists; fold=0 is the first of two on a night clocks go back
    # Skipped: fold=0 reads it with the offset before the change, landing after the jump; the
    # jump is the last instant before that whose wall time is still earlier than `wall`.
    low, high = instant - _LONGEST_GAP, instant
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) < naive:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0) if high.microsecond else high
