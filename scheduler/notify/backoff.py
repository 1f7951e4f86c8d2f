"""How long a transient failure waits before the next try: briefly within a run, longer across runs.

A provider's Retry-After lengthens a wait, never shortens it: one of 0 or a date already past
(a misconfigured proxy, a clock behind) still waits the normal backoff, so forty such answers in
a row are forty spaced tries, not a burst.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.clock import Clock
from scheduler.limits import Limits


class Backoff:
    """The retry delays, from the limits' base and cap."""

    def __init__(self, limits: Limits) -> None:
        self._base = limits.backoff_base_seconds
        self._cap = limits.backoff_cap_seconds

    def later(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Delay before a later run tries again: exponential from the base with jitter, at most
        the cap, or the provider's Retry-After (at most the cap) when that is longer."""
        normal = min(self._cap, self._base * 2.0 ** max(0, attempt - 1)) * rng.uniform(0.5, 1.0)
        if retry_after is not None and retry_after > normal:
            return min(retry_after, self._cap)
        return normal

    @staticmethod
    def now(attempt_here: int, retry_after: float | None, rng: random.Random) -> float:
        """A short wait between tries within one run (1 s, 2 s, ..., with jitter), or the
        provider's Retry-After when that is longer."""
        normal = float(2 ** (attempt_here - 1)) * rng.uniform(0.5, 1.0)
        if retry_after is not None and retry_after > normal:
            return retry_after
        return normal


class RetryPolicy:
    """What happens after a transient failure, for one message or a batch alike: given up once it
    has failed for MESSAGE_MAX_RETRY_HOURS, tried again here after a short wait while the run's
    in-run budget allows, or left for a later run. Time decides, never a count of attempts."""

    def __init__(self, limits: Limits, clock: Clock, *, give_up_after: timedelta, rng: random.Random) -> None:
        self._limits = limits
        self._backoff = Backoff(limits)
        self._clock = clock
        self._give_up_after = give_up_after
        self._rng = rng

    def given_up(self, failing_since: datetime | None, reason: str) -> str | None:
        """The failure reason once retrying is over (failing since then, or since now), else None."""
        if self._clock.now() - (failing_since or self._clock.now()) < self._give_up_after:
            return None
        return f"gave up after {self._give_up_after / timedelta(hours=1):g} hours of transient failures: {reason}"

    def wait_here(self, attempt_here: int, retry_after: float | None, should_stop: Callable[[], bool]) -> float | None:
        """The wait before trying again in this run, or None when the rest is a later run's."""
        delay = Backoff.now(attempt_here, retry_after, self._rng)
        in_budget = attempt_here < self._limits.in_run_attempts and delay <= self._limits.in_run_max_delay_seconds
        return delay if in_budget and not should_stop() else None

    def later(self, attempts: int, retry_after: float | None) -> float:
        """The wait before a later run tries again, after `attempts` tries in all."""
        return self._backoff.later(attempts, retry_after, self._rng)
