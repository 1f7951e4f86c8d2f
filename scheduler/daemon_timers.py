"""The daemon's timers: what it does every few seconds while it runs (the heartbeat and next-run
gauges, the reaper, following the pauses, the gauges read from the shared history and the backlog
gauge), each a tick that logs a database failure and waits for the next one.

Apart from the daemon (`daemon.py`), which keeps the order of start-up and shutdown and the
signals and only says when each tick runs: a tick is the daemon's view of the shared tables,
and the pauses it last read (`paused`) are what the reaper honours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from scheduler.db.errors import DatabaseError
from scheduler.vocabulary import JobName, Trigger

if TYPE_CHECKING:
    from scheduler.app import App
    from scheduler.db.pauses import Pause

# The daemon's lines: their `logger` is the daemon's, wherever the tick that writes them lives.
log = structlog.get_logger("scheduler.daemon")


async def every(seconds: float, tick: Callable[[], Awaitable[None]], *, at_once: bool = True) -> None:
    """Call `tick` every `seconds` (first at once, or after one interval)."""
    if not at_once:
        await asyncio.sleep(seconds)
    while True:
        await tick()
        await asyncio.sleep(seconds)


class Timers:
    """The daemon's periodic work on `app`; the daemon spawns each tick with `every`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.paused: dict[str, Pause] = {}  # as last read from the database

    async def reap(self) -> None:
        """Resume runs still marked running whose lease expired: their replica died or gave them up."""
        history = self.app.history
        try:
            abandoned = await history.abandoned()
        except DatabaseError as exc:
            log.warning("reaper_failed", error=str(exc))
            return
        for job, run in abandoned:
            # A paused job's abandoned run waits for the resume (take_over checks it too).
            if not history.running_here((job,)) and job.value not in self.paused:
                self.app.inflight.run(job, Trigger.TAKE_OVER, abandoned=run)

    async def refresh_pauses(self) -> None:
        """Follow the pauses in the database (any replica's `pause` or `resume`): the job_paused
        gauges, and a line when a job is seen paused or resumed. Each fire checks the database
        itself, so this only has to be prompt for the gauges and the reaper."""
        try:
            paused = await self.app.history.paused_jobs()
        except DatabaseError as exc:
            log.warning("pauses_not_read", error=str(exc))
            return
        for name in sorted(paused.keys() - self.paused.keys()):
            pause = paused[name]
            log.info(
                "job_paused", job=name, paused_by=pause.paused_by, reason=pause.reason,
                paused_at=pause.paused_at.isoformat(), effect="its scheduled fires are skipped until `resume`",
            )  # fmt: skip
        for name in sorted(self.paused.keys() - paused.keys()):
            log.info("job_resumed", job=name)
        self.paused = paused
        self.app.metrics.show_paused(paused)

    async def refresh_history_gauges(self) -> None:
        """The last-success and last-error gauges from the run history: every replica's runs and
        every manual run (a failing `--run-once` from cron shows in this daemon's alerts)."""
        try:
            self.app.metrics.follow_history(await self.app.history.last_finishes())
        except DatabaseError as exc:
            log.warning("history_gauges_not_updated", error=str(exc))

    async def refresh_pending_gauge(self) -> None:
        try:
            await self.app.dispatcher.refresh_pending_gauge()
        except DatabaseError as exc:
            log.warning("pending_gauge_not_updated", error=str(exc))

    async def heartbeat(self) -> None:
        """Prove the loop alive (/healthz) and keep the next-run gauges current after each fire."""
        self.app.lifecycle.beat()
        self.next_runs()  # from the first beat on: known before the database answers

    def next_runs(self) -> dict[JobName, datetime | None]:
        times = self.app.schedule.next_run_times()
        for job, at in times.items():
            self.app.metrics.job_next_run.labels(job_name=job).set(at.timestamp() if at else 0)
        return times
