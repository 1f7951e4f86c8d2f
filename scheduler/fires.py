"""A scheduled fire's run, and its runs again after an error (CONTRACT §5): a fire whose run ended
in error, or could not reach the database, runs again after 1, 2, 4 ... minutes (at most 30)
within the catch-up window, so a short outage at a daily fire time costs minutes, not a day."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from scheduler.records import Fire
from scheduler.vocabulary import JobName, RunOutcome, Trigger

if TYPE_CHECKING:
    from scheduler.app import App

log = structlog.get_logger(__name__)


class FireRuns:
    """Starts the runs of scheduled fires and of their retries; the daemon cancels what is pending at stop."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._timers: set[asyncio.TimerHandle] = set()

    def run(self, job: JobName, fire: Fire, trigger: Trigger, *, attempt: int = 1) -> None:
        """Run the job for this fire (the run history decides whether it may), and again if it fails."""
        task = self._app.inflight.run(job, trigger, fire=fire)
        if task is not None:
            task.add_done_callback(lambda done: self._after(job, fire, attempt, done))

    def cancel_retries(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _after(self, job: JobName, fire: Fire, attempt: int, task: asyncio.Task[Any]) -> None:
        app = self._app
        if task.cancelled() or task.exception() is not None or app.lifecycle.stopping:
            return
        if task.result().outcome is not RunOutcome.ERROR:
            return  # done, partial, or skipped (another replica has the fire): nothing to retry
        limits = app.limits
        delay = min(limits.fire_retry_first_seconds * 2 ** (attempt - 1), limits.fire_retry_max_seconds)
        if app.clock.now() + timedelta(seconds=delay) > fire.scheduled_for + limits.catch_up_window:
            log.error("fire_given_up", job=job.value, slot=fire.slot, attempts=attempt)
            return
        log.warning("fire_retry_scheduled", job=job.value, slot=fire.slot, attempt=attempt + 1, in_seconds=delay)
        timer: asyncio.TimerHandle | None = None

        def due() -> None:
            if timer is not None:
                self._retry(timer, job, fire, attempt + 1)

        timer = asyncio.get_running_loop().call_later(delay, due)
        self._timers.add(timer)

    def _retry(self, timer: asyncio.TimerHandle, job: JobName, fire: Fire, attempt: int) -> None:
        self._timers.discard(timer)  # only pending retries are kept (a long-lived daemon's set stays small)
        if not self._app.lifecycle.stopping:
            self.run(job, fire, Trigger.RETRY, attempt=attempt)
