"""One batch of due bookings for a reminder: planned, recorded in the caller's transaction with
the reminder ledger, in-app notices and audit rows, and counted in the run's result and metrics.
A booking whose message cannot be written, or whose platform row the database refuses, fails
alone (`jobs/reminders.py` walks the batches and sends).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db import outbox_owed, platform_rows
from scheduler.db import reminders as reminders_db
from scheduler.db.platform_rows import RefusedRow
from scheduler.db.reminders import DueReminder
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.notify.content import ContentError
from scheduler.notify.planner import OwedMessages, dedupe_key
from scheduler.records import AuditEntry, InAppNotification
from scheduler.vocabulary import IN_APP, JobName, MessageKind, ReminderKind, Role


@dataclass(frozen=True, slots=True)
class ReminderRule:
    """What one reminder job owes: its message kind, to whom, and whether only a balance due counts."""

    job: JobName
    kind: MessageKind
    metric_kind: ReminderKind
    roles: tuple[Role, ...]
    balance_due_only: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """One batch of due bookings, recorded: what they are owed and what the database took."""

    owed: OwedMessages
    writable: list[DueReminder]
    refused: list[RefusedRow]
    inserted: list[UUID]  # the deliveries recorded (not those already owed from an earlier run)


async def record(
    ctx: JobContext,
    rule: ReminderRule,
    conn: AsyncConnection,
    candidates: list[DueReminder],
    *,
    now: datetime,
    result: JobResult,
    unwritable: set[UUID],
) -> Recorded:
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
    return Recorded(owed, writable, refused, inserted)


def count(ctx: JobContext, rule: ReminderRule, result: JobResult, batch: Recorded) -> set[UUID]:
    """Count a recorded batch in the result and the metrics; the bookings reminded in-app."""
    result.errors += batch.owed.errors
    result.errors += _refused_errors(rule, batch.writable, batch.refused)
    notices = _written(batch.owed, batch.refused)
    ctx.deps.metrics.reminders_sent.labels(kind=rule.metric_kind, channel=IN_APP).inc(len(notices))
    ctx.deps.metrics.count_recorded(batch.owed.settled(batch.inserted))
    result.count_recorded(batch.owed.settled(batch.inserted))
    return {notice.booking_id for notice in notices}


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
    for due in candidates:
        # Planning is CPU work (about 2 ms a booking): after each booking, the sends in flight and
        # the claims of the first batch's messages go on, so its first request is not held back.
        await asyncio.sleep(0)
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
