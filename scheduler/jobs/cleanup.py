"""The nightly cleanups: stale bookings cancelled, old notifications, expired OTPs and old audit logs deleted."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from scheduler import progress
from scheduler.db import bookings as bookings_db
from scheduler.db import cleanup as cleanup_db
from scheduler.db import outbox_owed, platform_rows
from scheduler.db.cleanup import Purge
from scheduler.db.errors import DatabaseError
from scheduler.db.platform_rows import RefusedRow
from scheduler.jobs.batches import purge_in_batches
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.notify.content import ContentError
from scheduler.notify.planner import OwedMessages
from scheduler.records import AuditEntry, BookingRecord
from scheduler.vocabulary import JobName, MessageKind, Role

STALE_REASON = "Deposit not received within {hours} hours of booking"


async def cleanup_stale_bookings(ctx: JobContext, now: datetime) -> JobResult:
    """Cancel bookings still pending without a deposit after STALE_BOOKING_HOURS, notifying both sides.

    Each batch is one transaction: the cancellation, its audit row, the in-app notices and the
    owed WhatsApp and email messages commit together. A platform row the database refuses (an
    unknown NOT NULL column, a trigger) or a booking that cannot be written about (a date out of
    range) is an error for that row or booking alone. The messages go out after commit.
    """
    deps = ctx.deps
    result = JobResult(JobName.CLEANUP_STALE_BOOKINGS, started_at=now, dry_run=ctx.dry_run)
    hours = deps.settings.stale_booking_hours
    cutoff = now - timedelta(hours=hours)
    batch_size = deps.limits.cancel_batch_size
    if ctx.dry_run:
        async with deps.db.connect() as conn:
            references = await bookings_db.find_stale_references(conn, cutoff=cutoff)
        result.count = len(references)
        result.details["bookings"] = references
        return result

    owed_ids: list[UUID] = []
    has_audit = deps.tables.has("audit_logs")
    while not ctx.should_stop():
        try:
            async with deps.db.begin() as conn:
                ids = await bookings_db.cancel_stale_bookings(conn, cutoff=cutoff, now=now, limit=batch_size)
                records = await bookings_db.load_booking_records(
                    conn, ids, with_preferences=deps.tables.has("notification_preferences")
                )
                owed = _owe_cancellation(ctx, records, now)
                refused = await platform_rows.insert_notifications(conn, owed.notices, now=now)
                if has_audit:
                    reason = STALE_REASON.format(hours=hours)
                    audits = [
                        AuditEntry.for_booking(record, "auto_cancelled_stale", reason=reason, cutoff=cutoff.isoformat())
                        for record in records
                    ]
                    refused += await platform_rows.insert_audit_entries(conn, audits, now=now)
                inserted = await outbox_owed.record_owed(conn, owed.deliveries)
        except DatabaseError as exc:
            result.fail(f"cancelling a batch of stale bookings failed: {exc}")
            break
        result.count += len(ids)
        progress.count("cancelled", len(ids))
        result.errors += owed.errors
        result.errors += _refused_errors(records, refused)
        deps.metrics.bookings_cancelled.inc(len(ids))
        deps.metrics.count_recorded(owed.settled(inserted))
        result.count_recorded(owed.settled(inserted))
        owed_ids += inserted
        for record in records:
            ctx.log.info("booking_cancelled", booking=record.facts.reference, reason="stale")
        if len(ids) < batch_size:
            break

    report = await deps.dispatcher.deliver(only_ids=owed_ids, should_stop=ctx.should_stop)
    result.errors += report.errors
    result.messages.update(report.states)
    result.details["messagesSent"] = report.sent
    return result


def _owe_cancellation(ctx: JobContext, records: list[BookingRecord], now: datetime) -> OwedMessages:
    owed = OwedMessages()
    for record in records:
        # The booking is still cancelled (the audit row says so); only its notices could not be written.
        try:
            owed.extend(
                ctx.deps.planner.plan(
                    MessageKind.BOOKING_CANCELLED, record, (Role.CLIENT, Role.PERFORMER), now=now, run_id=ctx.run_id
                )
            )
        except ContentError as exc:
            owed.errors.append(f"booking {record.facts.reference}: cancellation notice not written: {exc}")
        except ArithmeticError as exc:  # OverflowError (an event_date in the year 9999), decimal.InvalidOperation
            owed.errors.append(
                f"booking {record.facts.reference}: cancellation notice not written: "
                f"a date or amount out of range ({type(exc).__name__})"
            )
    return owed


def _refused_errors(records: list[BookingRecord], refused: list[RefusedRow]) -> list[str]:
    """One error per platform row the database refused; the cancellation stands."""
    references: dict[UUID | None, str] = {record.id: record.facts.reference for record in records}
    return [
        f"booking {references.get(row.booking_id, str(row.booking_id))}: cancelled, but its "
        f"{row.what} was not written to {row.table}: {row.reason}"
        for row in refused
    ]


async def cleanup_old_notifications(ctx: JobContext, now: datetime) -> JobResult:
    """Delete read notifications older than NOTIFICATION_RETENTION_DAYS; unread ones are kept forever."""
    deps = ctx.deps
    cutoff = now - timedelta(days=deps.settings.notification_retention_days)
    result = await _purge(ctx, JobName.CLEANUP_OLD_NOTIFICATIONS, cleanup_db.READ_NOTIFICATIONS, now, cutoff)
    if result.count and not ctx.dry_run and deps.tables.has("audit_logs"):
        try:
            async with deps.db.begin() as conn:
                refused = await platform_rows.insert_audit_entries(
                    conn,
                    [
                        AuditEntry(
                            event_type="system",
                            action="cleanup_old_notifications",
                            booking_id=None,
                            details={"count": result.count, "cutoff": cutoff.isoformat()},
                        )
                    ],
                    now=now,
                )
        except DatabaseError as exc:
            result.errors.append(f"writing the audit row failed: {exc}")
        else:
            result.errors += [f"the audit row was not written to {row.table}: {row.reason}" for row in refused]
    return result


async def cleanup_expired_otps(ctx: JobContext, now: datetime) -> JobResult:
    """Delete one-time codes whose expiry has passed."""
    return await _purge(ctx, JobName.CLEANUP_EXPIRED_OTPS, cleanup_db.EXPIRED_OTPS, now, cutoff=now)


async def cleanup_old_audit_logs(ctx: JobContext, now: datetime) -> JobResult:
    """Delete audit rows older than AUDIT_LOG_RETENTION_DAYS, keeping AUDIT_LOG_KEEP_EVENT_TYPES forever."""
    cutoff = now - timedelta(days=ctx.deps.settings.audit_log_retention_days)
    return await _purge(ctx, JobName.CLEANUP_OLD_AUDIT_LOGS, cleanup_db.OLD_AUDIT_LOGS, now, cutoff)


async def _purge(ctx: JobContext, job: JobName, purge: Purge, now: datetime, cutoff: datetime) -> JobResult:
    """Delete in batches of DELETE_BATCH_SIZE, each its own transaction; a failed batch ends the run."""
    deps = ctx.deps
    result = JobResult(job, started_at=now, dry_run=ctx.dry_run)
    params = cleanup_db.purge_params(cutoff, deps.settings.audit_log_keep_event_types)
    if ctx.dry_run:
        async with deps.db.connect() as conn:
            result.count = await cleanup_db.count_matching(conn, purge, params)
        return result

    batches = 0

    def counted(rows: int) -> None:
        nonlocal batches
        batches += 1
        result.count += rows
        progress.count("deleted", rows)
        deps.metrics.rows_deleted.labels(job_name=job, table=purge.table).inc(rows)

    try:
        await purge_in_batches(ctx, purge, params, on_batch=counted)
    except DatabaseError as exc:
        result.fail(f"deleting from {purge.table} failed after {result.count} rows: {exc}")
    result.details["batches"] = batches
    return result
