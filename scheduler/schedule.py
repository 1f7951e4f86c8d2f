"""The scheduling layer: one APScheduler 3 cron trigger per enabled job, each fire handed to the
daemon with its exact scheduled time, plus the pure time arithmetic around it (slots, catch-up).

It knows job names and cron expressions only; what a fire does is the `on_fire` callback's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import structlog
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler import cron, triggers
from scheduler.clock import Clock
from scheduler.vocabulary import JobName

log = structlog.get_logger(__name__)

CATCH_UP_WINDOW = timedelta(hours=6)  # CONTRACT §5: a fire missed longer ago than this is not run late
# A fire that comes late (suspended VM, blocked loop, clock stepped forward) still runs, as a fire
# missed while the daemon was down would at start: the same window for both, so no gap between them.
MISFIRE_GRACE_SECONDS = int(CATCH_UP_WINDOW.total_seconds())

OnFire = Callable[[JobName, datetime], None]


def _handed_over() -> None:
    """The APScheduler job function, never called: _HandOffExecutor hands fires to `on_fire` instead."""


def slot_key(expression: str, tz: tzinfo, scheduled_for: datetime) -> str:
    """The key that makes a fire run once in all replicas, following Vixie cron on DST nights.

    - A fixed-time job (`0 2 * * *`, see `cron.is_wildcard`) is keyed on the local wall-clock
      minute (`2026-04-05T02:00`). On the night clocks go back APScheduler fires it at 02:00+11
      and again at 02:00+10: one slot, so it runs once. On the night they spring forward its
      non-existent 02:00 fires once, at the changeover (03:00+11).
    - A wildcard job firing at most hourly (`0 * * * *`) is keyed the same way, except that the
      second occurrence of a repeated wall time carries its UTC offset (`2026-04-05T02:00+10:00`),
      so it runs every real hour, 25 times that day. All its other keys are as before, so a fleet
      that is half upgraded still agrees on every ordinary hour.
    - A more frequent wildcard job (`*/5 * * * *`) is keyed on the UTC instant (`2026-04-04T15:00Z`).

    Each key depends only on the instant, never on how a datetime happens to be represented, so
    every replica computes the same one.
    """
    instant = scheduled_for.astimezone(UTC)
    wildcard = cron.is_wildcard(expression)
    if wildcard and not cron.fires_at_most_hourly(expression):
        # Seconds only where a fire has them (schedules in seconds, tests only): cron fires on the minute.
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ" if instant.second else "%Y-%m-%dT%H:%MZ")
    # Through UTC: astimezone() to a datetime's own zone keeps a non-existent wall time as it is;
    # from UTC, zoneinfo sets fold=1 on the second occurrence of a repeated wall time.
    local = instant.astimezone(tz)
    if wildcard and local.replace(fold=0).astimezone(UTC) != instant:
        return local.isoformat(timespec="minutes")  # the repeat: 2026-04-05T02:00+10:00
    return local.strftime("%Y-%m-%dT%H:%M")


def fires_between(expression: str, tz: tzinfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every fire of the expression in (start, end], in order, as APScheduler would fire them
    (two wall times at one instant, a skipped 02:00 and 03:00, are one fire: APScheduler coalesces them)."""
    trigger = triggers.build_trigger(expression, tz)
    fire = trigger.get_next_fire_time(None, start)
    last: datetime | None = None
    while fire is not None and fire <= end:
        # Compared in UTC: within one zone Python compares wall times, and the two 02:00s are equal.
        if fire > start and (last is None or fire.astimezone(UTC) != last.astimezone(UTC)):
            yield fire
            last = fire
        fire = trigger.get_next_fire_time(fire, fire)


def missed_fire(
    expression: str, tz: tzinfo, *, installed_at: datetime, now: datetime, window: timedelta = CATCH_UP_WINDOW
) -> datetime | None:
    """The fire the start-up catch-up should run: the latest one in (max(now - window, installed_at), now].

    Only the latest counts: jobs work on the database's current state, so running a missed
    hour's reminders and then the next hour's would do the same work twice (coalescing).
    """
    start = max(now - window, installed_at)
    latest = None
    for fire in fires_between(expression, tz, start, now):
        latest = fire
    return latest


def next_fire(expression: str, tz: tzinfo, now: datetime) -> datetime | None:
    """The first fire at or after `now` (None for `off`)."""
    if expression == cron.OFF:
        return None
    fire: datetime | None = triggers.build_trigger(expression, tz).get_next_fire_time(None, now.astimezone(tz))
    return fire


class _HandOffExecutor(BaseExecutor):  # type: ignore[misc]
    """Gives each fire, with the exact time it was scheduled for, to the daemon and returns at once.

    APScheduler's own executors call the job function without its scheduled time, and their
    shutdown cancels running coroutines; the daemon tracks and drains its runs itself, so this
    executor only applies the misfire rule and hands over.
    """

    def __init__(self, on_fire: OnFire, clock: Clock) -> None:
        super().__init__()
        self._on_fire = on_fire
        self._clock = clock

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        # No instance accounting: a hand-over ends at once; the daemon skips a fire whose job is
        # still running (and counts it), which APScheduler's max_instances would do silently.
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        scheduled_for = run_times[-1].astimezone(UTC)  # coalesce=True: one time, the latest
        late = self._clock.now() - scheduled_for
        if late > timedelta(seconds=job.misfire_grace_time):
            log.warning(
                "fire_missed",
                job=job.id,
                scheduled_for=scheduled_for.isoformat(),
                late_seconds=round(late.total_seconds()),
            )
            return
        self._on_fire(JobName(job.id), scheduled_for)


class Schedule:
    """An AsyncIOScheduler with one cron job per enabled job; every fire goes to `on_fire(job, scheduled_for)`."""

    def __init__(self, schedules: Mapping[JobName, str], tz: tzinfo, clock: Clock) -> None:
        self.schedules = dict(schedules)
        self.tz = tz
        self._clock = clock
        self._on_fire: OnFire | None = None
        self.scheduler = AsyncIOScheduler(
            timezone=tz,  # APScheduler's default is the host's zone
            jobstores={"default": MemoryJobStore()},  # fires missed while down are ours to catch up
            executors={"default": _HandOffExecutor(self._hand_over, clock)},
            job_defaults={
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,  # APScheduler's default is 1 s
                "coalesce": True,  # fires piled up by a delay run once
                "max_instances": 1,  # see _HandOffExecutor: the daemon enforces it and counts skips
            },
        )
        for job, expression in self.schedules.items():
            self.scheduler.add_job(_handed_over, triggers.build_trigger(expression, tz), id=job.value, name=job.value)

    def _hand_over(self, job: JobName, scheduled_for: datetime) -> None:
        if self._on_fire is not None:
            self._on_fire(job, scheduled_for)

    def start(self, on_fire: OnFire) -> None:
        """Start handing every fire to `on_fire`; must be called from the running event loop."""
        self._on_fire = on_fire
        self.scheduler.start()

    def shutdown(self) -> None:
        """Stop firing now: no fire is handed over after this returns."""
        if self.scheduler.running:
            self.scheduler.pause()  # takes effect at once; shutdown() itself is deferred to the loop
            self.scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def slot(self, job: JobName, scheduled_for: datetime) -> str:
        return slot_key(self.schedules[job], self.tz, scheduled_for)

    def next_run_times(self) -> dict[JobName, datetime | None]:
        """Every job's next fire; None for a disabled job.

        Before the scheduler starts (the daemon still waits for its database) the triggers are
        asked, so the next runs are known from the first scrape (CONTRACT §5).
        """
        times: dict[JobName, datetime | None] = dict.fromkeys(JobName)
        now = self._clock.now()
        for scheduled in self.scheduler.get_jobs():
            # Jobs have no next_run_time until the scheduler has started.
            at = getattr(scheduled, "next_run_time", None)
            if at is None and not self.scheduler.running:
                at = scheduled.trigger.get_next_fire_time(None, now)
            times[JobName(scheduled.id)] = at
        return times
