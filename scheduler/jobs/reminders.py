"""The hourly reminders: the event in the next 24 hours, and the balance due within 3 days.

Due-based, not window-based: every booking whose event is inside the horizon and more than
REMINDER_MIN_LEAD_MINUTES away, and that has no reminder of this kind for its current
event_date, is reminded, however long the daemon was down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db import outbox_owed, platform_rows
from scheduler.db import reminders as reminders_db
from scheduler.db.errors import DatabaseError
from scheduler.db.platform_rows import RefusedRow
from scheduler.db.reminders import DueReminder
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.notify.content import ContentError
from scheduler.notify.outcomes import DeliveryReport
from scheduler.notify.planner import OwedMessages, dedupe_key
from scheduler.records import AuditEntry, InAppNotification
from scheduler.vocabulary import IN_APP, JobName, MessageKind, ReminderKind, Role


@dataclass(frozen=True, slots=True)
class ReminderRule:
    job: JobName
    kind: MessageKind
    metric_kind: ReminderKind
    roles: tuple[Role, ...]
    balance_due_only: bool


_PLANS_BETWEEN_YIELDS = 10  # bookings planned (under 10 ms of CPU) between two chances for the sends to go on

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
                    batch = await _record(ctx, rule, conn, candidates, now=now, result=result, unwritable=unwritable)
            except DatabaseError as exc:
                result.fail(f"recording {rule.kind.value}s failed: {exc}")
                break
            reminded_in_app |= _count(ctx, rule, result, batch)
            inserted = batch.inserted
            if first is None and inserted:
                # The first batch's messages go out while the later batches are found, planned
                # and recorded (planning yields now and then, so the sends keep to their
                # ceilings); the later batches' go after them. A database lost while recording
                # lets the first batch's sends finish and settle on fresh connections (a send
                # that cannot settle stays 'sending' and is resumed after its lease, as any send
                # in flight when the database goes), then the batches recorded so far go; the
                # rest is found again by the next run.
                first = asyncio.create_task(deps.dispatcher.deliver(only_ids=inserted, should_stop=ctx.should_stop))
            else:
                later_ids += inserted
            if len(candidates) < batch_size:
                break
    except BaseException:  # the run cancelled, or a fault of ours: the first batch's sends stop too
        if first is not None:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        raise
    report = DeliveryReport() if first is None else await first
    report.merge(await deps.dispatcher.deliver(only_ids=later_ids, should_stop=ctx.should_stop))
    result.errors += report.errors
    result.messages.update(report.states)
    # A booking counts once this run delivered it at least one message, in-app included.
    result.count = len(report.bookings_sent | reminded_in_app)
    result.details["messagesSent"] = report.sent
    return result


@dataclass(frozen=True, slots=True)
class _Recorded:
    """One batch of due bookings, recorded: what they are owed and what the database took."""

    owed: OwedMessages
    writable: list[DueReminder]
    refused: list[RefusedRow]
    inserted: list[UUID]  # the deliveries recorded (not those already owed from an earlier run)


async def _record(
    ctx: JobContext,
    rule: ReminderRule,
    conn: AsyncConnection,
    candidates: list[DueReminder],
    *,
    now: datetime,
    result: JobResult,
    unwritable: set[UUID],
) -> _Recorded:
    """Plan the batch's messages and record them with the ledger, notices and audit rows, in the
    caller's transaction."""
    owed, writable = await _plan(ctx, rule, candidates, now=now, result=result, unwritable=unwritable)
    won = await reminders_db.claim_reminders(
        conn,
        kind=rule.kind.value,
        due=[(due.record.id, due.record.event_date) for due in writable if due.record.event_date],
        run_id=ctx.run_id,
        now=now,
    )
    owed = _for_this_reminder(owed.only_bookings(won), writable)
    refused = await platform_rows.insert_notifications(conn, owed.notices, now=now)
    if ctx.deps.tables.has("audit_logs"):
        refused += await platform_rows.insert_audit_entries(conn, _audit_rows(rule, writable, won), now=now)
    inserted = await outbox_owed.record_owed(conn, owed.deliveries)
    return _Recorded(owed, writable, refused, inserted)


def _count(ctx: JobContext, rule: ReminderRule, result: JobResult, batch: _Recorded) -> set[UUID]:
    """Count a recorded batch in the result and the metrics; the bookings reminded in-app."""
    result.errors += batch.owed.errors
    result.errors += _refused_errors(rule, batch.writable, batch.refused)
    notices = _written(batch.owed, batch.refused)
    ctx.deps.metrics.reminders_sent.labels(kind=rule.metric_kind, channel=IN_APP).inc(len(notices))
    ctx.deps.metrics.count_recorded(batch.owed.settled(batch.inserted))
    result.count_recorded(batch.owed.settled(batch.inserted))
    return {notice.booking_id for notice in notices}


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


async def _plan(
    ctx: JobContext,
    rule: ReminderRule,
    candidates: list[DueReminder],
    *,
    now: datetime,
    result: JobResult,
    unwritable: set[UUID],
) -> tuple[OwedMessages, list[DueReminder]]:
    """Plan every candidate's messages; a booking whose message cannot be written fails alone,
    also when a value in it cannot be represented (an event_date in the year 9999, an amount
    beyond any precision)."""
    owed = OwedMessages()
    writable: list[DueReminder] = []
    for position, due in enumerate(candidates, start=1):
        if position % _PLANS_BETWEEN_YIELDS == 0:
            await asyncio.sleep(0)  # planning is CPU work: the sends in flight go on meanwhile
        record = due.record
        try:
            owed.extend(ctx.deps.planner.plan(rule.kind, record, rule.roles, now=now, run_id=ctx.run_id))
        except ContentError as exc:
            unwritable.add(record.id)
            result.errors.append(f"booking {record.facts.reference}: {rule.kind.value} not written: {exc}")
            continue
        except ArithmeticError as exc:  # OverflowError, decimal.InvalidOperation
            unwritable.add(record.id)
            result.errors.append(
                f"booking {record.facts.reference}: {rule.kind.value} not written: "
                f"a date or amount out of range ({type(exc).__name__})"
            )
            continue
        writable.append(due)
    return owed, writable


def _for_this_reminder(owed: OwedMessages, due: list[DueReminder]) -> OwedMessages:
    """Messages of a reminder owed again for a date reminded before (A -> B -> A) are new
    messages: their dedupe keys name the earlier reminder they follow."""
    again = {reminder.record.id: reminder.reminded_before for reminder in due if reminder.reminded_before}
    if not again:
        return owed
    deliveries = [
        dataclasses.replace(
            row,
            dedupe_key=dedupe_key(
                row.booking_id,
                row.kind,
                row.event_date,
                row.recipient_role,
                row.channel,
                reminded_before=again[row.booking_id],
            ),
        )
        if row.booking_id in again
        else row
        for row in owed.deliveries
    ]
    return OwedMessages(deliveries=deliveries, notices=owed.notices, errors=owed.errors)


def _written(owed: OwedMessages, refused: list[RefusedRow]) -> list[InAppNotification]:
    """The in-app notices the database took (a refused one counts for its booking's error)."""
    not_taken = {row.position for row in refused if row.table == "notifications"}
    return [notice for position, notice in enumerate(owed.notices) if position not in not_taken]


def _refused_errors(rule: ReminderRule, due: list[DueReminder], refused: list[RefusedRow]) -> list[str]:
    references: dict[UUID | None, str] = {reminder.record.id: reminder.record.facts.reference for reminder in due}
    return [
        f"booking {references.get(row.booking_id, str(row.booking_id))}: {rule.kind.value}: "
        f"{row.what} not written to {row.table}: {row.reason}"
        for row in refused
    ]


def _audit_rows(rule: ReminderRule, due: list[DueReminder], won: set[UUID]) -> list[AuditEntry]:
    return [
        AuditEntry.for_booking(
            reminder.record,
            "reminder_sent",
            kind=rule.kind.value,
            event_date=reminder.record.event_date.isoformat() if reminder.record.event_date else None,
        )
        for reminder in due
        if reminder.record.id in won
    ]
