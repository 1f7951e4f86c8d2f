"""The demo's quiet-hours path. The demo runs on the real clock, so by day nothing would be held:
one booking's event reminder is planned and dispatched by the daemon's own runner at a moment in
the latest quiet hours (a frozen clock), and so is held until they end, as the daemon running
overnight would have held it. Started by day, the demo's first round sends it; at night it waits
for the end of the quiet hours like every other message."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler import cron
from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db.tables import deliveries
from scheduler.demo.transports import demo_transports
from scheduler.jobs.catalog import schedule_for
from scheduler.jobs.result import JobResult
from scheduler.limits import Limits
from scheduler.schedule import fires_between
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, Trigger

log = structlog.get_logger(__name__)

# How far back the replayed run may lie: its booking's event is about a day after it (below), so
# the reminder is still true (the event more than 3 hours away) when the demo sends it.
LOOKBACK = timedelta(hours=20)
# The booking's event is BOOKING_REMINDER_HOURS after the replayed run less this: it fell due just
# before that run, after the one before it (hourly by default), so that run is the one that owed it.
DUE_BEFORE_RUN = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class QuietHoursPath:
    """When the replayed reminder run stands (UTC), and the event of the booking it reminds."""

    run_at: datetime
    event_date: datetime


def quiet_hours_path(settings: Settings, now: datetime) -> QuietHoursPath | None:
    """The latest fire of send_booking_reminders at most LOOKBACK before `now` that fell in the
    quiet hours, and an event that fell due just before it; None when quiet hours or the job are
    off, or no fire fell in them in that time."""
    quiet, tz = settings.quiet, settings.tz
    expression = schedule_for(settings, JobName.SEND_BOOKING_REMINDERS)
    if quiet is None or expression == cron.OFF:
        return None
    in_quiet = [fire for fire in fires_between(expression, tz, now - LOOKBACK, now) if quiet.ends_after(fire, tz)]
    if not in_quiet:
        return None
    run_at = in_quiet[-1].astimezone(UTC)
    event_date = run_at + timedelta(hours=settings.booking_reminder_hours) - DUE_BEFORE_RUN
    if event_date - run_at <= timedelta(minutes=settings.reminder_min_lead_minutes):
        return None  # due just before the run, the event would be too close to remind
    return QuietHoursPath(run_at, event_date)


async def replay_reminder_run(
    settings: Settings, limits: Limits, at: datetime, *, reference: str, stream: TextIO = sys.stderr
) -> JobResult:
    """Run `send_booking_reminders` through the daemon's runner as if it were `at` (the platform
    holds only the booking `reference` then). Messages it sends after all are printed on `stream`."""
    local = at.astimezone(settings.tz)
    log.info(
        "demo_quiet_hours_replay",
        booking=reference,
        at=local.isoformat(timespec="minutes"),
        quiet_hours=settings.quiet_hours,
        effect="the reminder run replayed at that moment: its WhatsApp is held until the quiet hours end",
    )
    with structlog.contextvars.bound_contextvars(demo_clock=local.isoformat(timespec="minutes")):
        app = build(settings, clock=FrozenClock(at), transports=demo_transports(stream), limits=limits, demo=True)
        try:
            await app.prepare_database()
            return await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
        finally:
            await app.aclose()


@dataclass(frozen=True, slots=True)
class HeldPath:
    """What became of the held booking's WhatsApp messages, for the ready banner."""

    reference: str
    due_at: datetime  # when the replayed run planned them (UTC)
    statuses: dict[str, int]


async def held_path(conn: AsyncConnection, reference: str) -> HeldPath | None:
    """The held booking's WhatsApp messages by status, or None when the demo laid no such path."""
    rows = (
        await conn.execute(
            select(deliveries.c.status, func.count(), func.min(deliveries.c.created_at))
            .where(deliveries.c.booking_reference == reference, deliveries.c.channel == Channel.WHATSAPP.value)
            .group_by(deliveries.c.status)
        )
    ).all()
    if not rows:
        return None
    return HeldPath(reference, min(row[2] for row in rows), {row[0]: row[1] for row in rows})
