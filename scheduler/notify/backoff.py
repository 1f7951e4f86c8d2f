"""How long a transient failure waits before the next try: briefly within a run, longer across runs.

A provider's Retry-After lengthens a wait, never shortens it: one of 0 or a date already past
(a misconfigured proxy, a clock behind) still waits the normal backoff, so forty such answers in
a row are forty spaced tries, not a burst.
"""

from __future__ import annotations

import random

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
