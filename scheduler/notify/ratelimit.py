"""How fast we may call a provider: a per-process send ceiling, and the provider's Retry-After."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

from scheduler.clock import Clock

_MIN_SLEEP_SECONDS = 1e-6
_SPACING_MARGIN_SECONDS = 1e-9


class RateLimiter:
    """Never more than `max_per_second` grants in any one-second window, first come first served.

    Grants are spaced evenly (one every 1/max_per_second seconds), with no burst: a burst granted
    at once reaches the provider spread out by latency, and the next second's grants then land in
    the same second as its tail, over the ceiling as the provider counts. Waiters queue on one
    FIFO lock, so only the head of the queue sleeps: fair, and a FrozenClock advances by the real
    waiting time rather than once per waiter.
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
        self._next_grant: float | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a slot. A waiter cancelled in the queue gives its place up."""
        async with self._lock:
            now = self._clock.monotonic()
            if self._next_grant is not None:
                # Loop: a timer may wake a hair early (or float rounding leave us an ulp short),
                # and "never exceed" is the promise; the floor guarantees progress.
                while now < self._next_grant:
                    await self._clock.sleep(max(self._next_grant - now, _MIN_SLEEP_SECONDS))
                    now = self._clock.monotonic()
            # An idle limiter does not bank slots: after a pause the next grant is spaced from now.
            self._next_grant = max(now, self._next_grant or now) + self._interval_seconds

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
