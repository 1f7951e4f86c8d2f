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


class RateLimiter:
    """Never more than `max_per_second` grants in any one-second window, first come first served.

    A sliding-window log: the last N grant times are kept, and the next grant waits until the
    oldest of them is a full window old. A burst of N goes at once, then one grant each time an
    old one leaves the window. N is the ceiling rounded down (at least 1); below one per second
    the window widens instead (0.5/s: one grant per 2 s). Waiters queue on one FIFO lock, so
    only the head of the queue sleeps: fair, and a FrozenClock advances by the real waiting
    time rather than once per waiter.
    """

    def __init__(self, max_per_second: float, clock: Clock) -> None:
        if not (max_per_second > 0 and math.isfinite(max_per_second)):
            raise ValueError("max_per_second must be a positive number")
        self.max_per_second = max_per_second
        self._clock = clock
        self._burst = max(1, math.floor(max_per_second))
        self._window_seconds = max(1.0, 1.0 / max_per_second)
        self._grants: deque[float] = deque(maxlen=self._burst)
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a slot. A waiter cancelled in the queue gives its place up."""
        async with self._lock:
            now = self._clock.monotonic()
            if len(self._grants) == self._burst:
                # Loop: a timer may wake a hair early (or float rounding leave us an ulp short),
                # and "never exceed" is the promise; the floor guarantees progress.
                while (elapsed := now - self._grants[0]) < self._window_seconds:
                    await self._clock.sleep(max(self._window_seconds - elapsed, _MIN_SLEEP_SECONDS))
                    now = self._clock.monotonic()
            self._grants.append(now)

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
