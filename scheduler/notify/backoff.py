"""How long a transient failure waits before the next try: briefly within a run, longer across runs."""

from __future__ import annotations

import random

from scheduler.limits import Limits


class Backoff:
    """The retry delays, from the limits' base and cap."""

    def __init__(self, limits: Limits) -> None:
        self._base = limits.backoff_base_seconds
        self._cap = limits.backoff_cap_seconds

    def later(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Delay before a later run tries again: the provider's Retry-After when it gave one,
        else exponential from the base with jitter, at most the cap."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self._cap)
        base = min(self._cap, self._base * 2.0 ** max(0, attempt - 1))
        return base * rng.uniform(0.5, 1.0)

    @staticmethod
    def now(attempt_here: int, retry_after: float | None, rng: random.Random) -> float:
        """A short wait between tries within one run (1 s, 2 s, ...), or the provider's Retry-After."""
        if retry_after is not None and retry_after >= 0:
            return retry_after
        return float(2 ** (attempt_here - 1)) * rng.uniform(0.5, 1.0)
