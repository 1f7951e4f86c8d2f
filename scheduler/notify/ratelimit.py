"""How fast we may call a provider: a per-process send ceiling, and the provider's Retry-After."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

from scheduler.clock import Clock

_MIN_SLEEP_SECONDS = 1e-6
_SPACING_MARGIN_SECONDS = 1e-9
# What happens between a grant and the request leaving (the SDK building it, the loop's other
# work) varies by milliseconds: each window is this much longer, so that the provider, counting
# arrivals, never sees more than the ceiling in a second either.
_WINDOW_MARGIN_SECONDS = 0.02
# A busy limiter keeps to its schedule after a grant that woke late by granting the next one up
# to this much sooner than a full interval after it, never more: a grant held up longer (the loop
# busy elsewhere) moves the schedule on instead of letting two requests leave close together.
_CATCH_UP_SECONDS = 0.005


class RateLimiter:
    """Never more than `max_per_second` grants in any one-second window, first come first served.

    Grants are spaced evenly (one every 1/max_per_second seconds), with no burst: a burst granted
    at once reaches the provider spread out by latency, and the next second's grants then land in
    the same second as its tail, over the ceiling as the provider counts. Waiters queue on one
    FIFO lock, so only the head of the queue sleeps: fair, and a FrozenClock advances by the real
    waiting time rather than once per waiter.

    A busy limiter keeps to its schedule: a timer wakes a little late (a millisecond or more
    under load), and spacing each grant from the moment the last one woke would add that delay
    to every interval (at 100/s, 88 grants a second). The ceiling itself is kept by the window:
    a grant comes at least one full window (and a margin) after the grant `per_window` before it.
    """

    def __init__(self, max_per_second: float, clock: Clock, *, slack_seconds: float = 0.0) -> None:
        if not (max_per_second > 0 and math.isfinite(max_per_second)):
            raise ValueError("max_per_second must be a positive number")
        self.max_per_second = max_per_second
        self._clock = clock
        # A whole number of grants per second (2.5/s: 2/s), so no 1-second window holds more than
        # the ceiling; below one per second, one grant per 1/max_per_second seconds.
        per_second = math.floor(max_per_second) if max_per_second >= 1 else max_per_second
        # A nanosecond more, so that adding the interval up in floating point never squeezes
        # one grant too many into a window.
        # `slack_seconds` more where what follows a grant varies by milliseconds before the
        # request leaves (a batch's large body), so that two grants apart never become two sends
        # closer than the ceiling allows.
        self._interval_seconds = 1.0 / per_second + _SPACING_MARGIN_SECONDS + slack_seconds
        self._per_window = max(1, math.floor(per_second))
        self._window_seconds = self._per_window * self._interval_seconds + _WINDOW_MARGIN_SECONDS
        self._scheduled: float | None = None  # when the next grant is due by the even spacing
        self._recent: deque[float] = deque(maxlen=self._per_window)  # the latest grants, as granted
        self._lock = asyncio.Lock()

    def _due(self, now: float) -> float:
        if self._scheduled is None:
            return now
        due = max(self._scheduled, self._recent[-1] + self._interval_seconds - _CATCH_UP_SECONDS)
        if len(self._recent) == self._per_window:
            due = max(due, self._recent[0] + self._window_seconds)
        return due

    async def acquire(self) -> None:
        """Wait for a slot. A waiter cancelled in the queue gives its place up."""
        async with self._lock:
            now = self._clock.monotonic()
            # Loop: a timer may wake a hair early (or float rounding leave us an ulp short), and
            # "never exceed" is the promise; the floor guarantees progress.
            while now < (due := self._due(now)):
                await self._clock.sleep(max(due - now, _MIN_SLEEP_SECONDS))
                now = self._clock.monotonic()
            self._recent.append(now)
            # On schedule while busy; an idle limiter (or one more than an interval behind, after
            # a stall) banks nothing: the next grant is spaced from now, never a catch-up burst.
            scheduled = self._scheduled
            on_time = scheduled is not None and now - scheduled < self._interval_seconds
            self._scheduled = (scheduled if scheduled is not None and on_time else now) + self._interval_seconds

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delay-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
