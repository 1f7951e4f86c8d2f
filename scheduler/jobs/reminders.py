"""The hourly reminders: the event in the next 24 hours, and the balance due within 3 days.

Due-based, not window-based: every booking whose event is inside the horizon and more than
REMINDER_MIN_LEAD_MINUTES away, and that has no reminder of this kind for its current
event_date, is reminded, however long the daemon was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db import reminders as reminders_db
from scheduler.db.errors import DatabaseError
from scheduler.db.reminders import DueReminder
from scheduler.jobs import reminder_batch
from scheduler.jobs.context import JobContext
from scheduler.jobs.reminder_batch import ReminderRule
from scheduler.jobs.result import JobResult
from scheduler.notify.outcomes import DeliveryReport
from scheduler.vocabulary import JobName, MessageKind, ReminderKind, Role

BOOKING_REMINDER = ReminderRule(
    JobName.SEND_BOOKING_REMINDERS,
    MessageKind.BOOKING_REMINDER,
    ReminderKind.BOOKING,
    (Role.CLIENT, Role.PERFORMER),
    False,
)
PAYMENT_REMINDER = ReminderRule(
    JobName.SEND_PAYMENT_REMINDERS, MessageKind.PAYMENT_REMINDER, ReminderKind.PAYMENT, (Role.CLIENT,), True
)


async def send_booking_reminders(ctx: JobContext, now: datetime) -> JobResult:
    """Remind client and performer of an event within BOOKING_REMINDER_HOURS, once per event_date."""
    horizon = timedelta(hours=ctx.deps.settings.booking_reminder_hours)
    return await _remind(ctx, BOOKING_REMINDER, now, horizon)


async def send_payment_reminders(ctx: JobContext, now: datetime) -> JobResult:
    """Remind the client of a balance due for an event within PAYMENT_REMINDER_DAYS, once per event_date."""
    horizon = timedelta(days=ctx.deps.settings.payment_reminder_days)
    return await _remind(ctx, PAYMENT_REMINDER, now, horizon)


async def _remind(ctx: JobContext, rule: ReminderRule, now: datetime, horizon: timedelta) -> JobResult:
    result = JobResult(rule.job, started_at=now, dry_run=ctx.dry_run)
    earliest = now + timedelta(minutes=ctx.deps.settings.reminder_min_lead_minutes)
    latest = now + horizon
    deps = ctx.deps
    with_preferences = deps.tables.has("notification_preferences")
    batch_size = deps.limits.reminder_batch_size

    if ctx.dry_run:
        async with deps.db.connect() as conn:
            due = await _find_all_due(conn, rule, earliest, latest, with_preferences, batch_size=batch_size)
        result.count = len(due)
        result.details["bookings"] = [reminder.record.facts.reference for reminder in due]
        return result

    later_ids: list[UUID] = []
    reminded_in_app: set[UUID] = set()
    unwritable: set[UUID] = set()  # bookings whose message cannot be written: reported once, not retried
    first: asyncio.Task[DeliveryReport] | None = None
    try:
        while not ctx.should_stop():
            try:
                async with deps.db.begin() as conn:
                    candidates = await _find_due(
                        conn, rule, earliest, latest, with_preferences, limit=batch_size, exclude=unwritable
                    )
                    if not candidates:
                        break
                    batch = await reminder_batch.record(
                        ctx, rule, conn, candidates, now=now, result=result, unwritable=unwritable
                    )
            except DatabaseError as exc:
                result.fail(f"recording {rule.kind.value}s failed: {exc}")
                break
            reminded_in_app |= reminder_batch.count(ctx, rule, result, batch)
            if first is None and batch.inserted:
                # The first batch's messages go out while the later batches are found, planned
                # and recorded (planning yields after each booking, so the sends keep to their
                # ceilings); the later batches' go after them. A database lost while recording
                # lets the first batch's sends finish and settle on fresh connections (a send
                # that cannot settle stays 'sending' and is resumed after its lease, as any send
                # in flight when the database goes), then the batches recorded so far go; the
                # rest is found again by the next run.
                first = asyncio.create_task(
                    deps.dispatcher.deliver(only_ids=batch.inserted, should_stop=ctx.should_stop)
                )
            else:
                later_ids += batch.inserted
            if len(candidates) < batch_size:
                break
    except BaseException:  # the run cancelled, or a fault of ours: the first batch's sends stop too
        if first is not None:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        raise
    try:
        report = DeliveryReport() if first is None else await first
    except DatabaseError as exc:
        # The first batch's sends could not all settle: said beside a recording failure, not over
        # it. What is not sent yet stays owed in the outbox, for the next delivery run.
        result.fail(f"sending {rule.kind.value}s failed: database error: {exc}")
        result.count = len(reminded_in_app)  # their in-app reminders were written
        return result
    report.merge(await deps.dispatcher.deliver(only_ids=later_ids, should_stop=ctx.should_stop))
    result.errors += report.errors
    result.messages.update(report.states)
    # A booking counts once this run delivered it at least one message, in-app included.
    result.count = len(report.bookings_sent | reminded_in_app)
    result.details["messagesSent"] = report.sent
    return result


async def _find_due(
    conn: AsyncConnection,
    rule: ReminderRule,
    earliest: datetime,
    latest: datetime,
    with_preferences: bool,
    *,
    limit: int,
    exclude: Iterable[UUID],
) -> list[DueReminder]:
    return await reminders_db.find_due_reminders(
        conn,
        kind=rule.kind.value,
        earliest_event=earliest,
        latest_event=latest,
        balance_due_only=rule.balance_due_only,
        with_preferences=with_preferences,
        limit=limit,
        exclude=exclude,
    )


async def _find_all_due(
    conn: AsyncConnection,
    rule: ReminderRule,
    earliest: datetime,
    latest: datetime,
    with_preferences: bool,
    *,
    batch_size: int,
) -> list[DueReminder]:
    """Every booking a run would remind now (the dry run), read in batches."""
    found: list[DueReminder] = []
    while True:
        seen = [reminder.record.id for reminder in found]
        batch = await _find_due(conn, rule, earliest, latest, with_preferences, limit=batch_size, exclude=seen)
        found += batch
        if len(batch) < batch_size:
            return found
