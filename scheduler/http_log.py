"""Keeping the HTTP server's log readable under abuse: counts of what was shed, one summary line
per interval, and aiohttp's per-request error records let through at most once per interval."""

from __future__ import annotations

import logging
import time


class Tally:
    """Counts events and says when a summary line is due: the first one at once, then one per interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._logged_at: float | None = None

    def add(self, what: str) -> dict[str, int] | None:
        """Count one; the counts so far (then reset) when a line is due, else None."""
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            return None
        self._logged_at = now
        counts, self.counts = self.counts, {}
        return counts


class RateLimitFilter(logging.Filter):
    """Lets aiohttp's per-request error records through at most once per interval (with how many
    were dropped), so a client sending garbage in a loop cannot flood the log."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._tally = Tally(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        counts = self._tally.add("records")
        if counts is None:
            return False
        dropped = counts["records"] - 1
        if dropped:
            record.msg = f"{record.msg} ({dropped} similar records dropped in the last interval)"
        return True
