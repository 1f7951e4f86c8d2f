"""The nightly cleanups: stale bookings cancelled, old notifications, expired OTPs and old audit logs deleted."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from scheduler.catalog import JobName
from scheduler.db import bookings as bookings_db
from scheduler.db import cleanup as cleanup_db
from scheduler.db import outbox as outbox_db
from scheduler.db.bookings import AuditEntry
from scheduler.db.cleanup import START_OF_TABLE, Purge
from scheduler.db.errors import describe_db_error
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.notify.content import ContentError
from scheduler.notify.message import MessageKind, Role
from scheduler.notify.outbox import OwedMessages

CANCEL_BATCH_SIZE = 100  # bookings per cancelling transaction: each also writes notices and messages
STALE_REASON = "Deposit not received within {hours} hours of booking"


async def cleanup_stale_bookings(ctx: JobContext, now: datetime) -> JobResult:
    """Cancel bookings still pending without a deposit after STALE_BOOKING_HOURS, notifying both sides.

    Each batch is one transaction: the cancellation, its audit row, the in-app notices and the
    owed WhatsApp and email messages commit together or not at all. The messages go out after commit.
    """
    result = JobResult(JobName.CLEANUP_STALE_BOOKINGS, started_at=now, dry_run=ctx.dry_run)
    hours = ctx.settings.stale_booking_hours
    cutoff = now - timedelta(hours=hours)
    if ctx.dry_run:
        async with ctx.engine.connect() as conn:
            references = await bookings_db.find_stale_references(conn, cutoff=cutoff)
        result.count = len(references)
        result.details["bookings"] = references
        return result

    owed_ids: list[UUID] = []
    has_audit = ctx.tables.has("audit_logs")
    while not ctx.should_stop():
        try:
            async with ctx.engine.begin() as conn:
                ids = await bookings_db.cancel_stale_bookings(conn, cutoff=cutoff, now=now, limit=CANCEL_BATCH_SIZE)
                records = await bookings_db.load_booking_records(
                    conn, ids, with_preferences=ctx.tables.has("notification_preferences")
                )
                owed = _owe_cancellation(ctx, records, now)
                await bookings_db.insert_notifications(conn, owed.notices, now=now)
                if has_audit:
                    await bookings_db.insert_audit_entries(
                        conn,
                        [
                            AuditEntry(
                                event_type="booking",
                                action="auto_cancelled_stale",
                                booking_id=record.id,
                                details={
                                    "reference": record.facts.reference,
                                    "reason": STALE_REASON.format(hours=hours),
                                    "cutoff": cutoff.isoformat(),
                                },
                            )
                            for record in records
                        ],
                        now=now,
                    )
                inserted = await outbox_db.record_owed(conn, owed.deliveries)
        except SQLAlchemyError as exc:
            result.errors.append(f"cancelling a batch of stale bookings failed: {describe_db_error(exc)}")
            break
        result.count += len(ids)
        result.errors += owed.errors
        ctx.metrics.bookings_cancelled.inc(len(ids))
        ctx.metrics.count_recorded(owed.settled(inserted), MessageKind.BOOKING_CANCELLED)
        owed_ids += inserted
        for record in records:
            ctx.log.info("booking_cancelled", booking=record.facts.reference, reason="stale")
        if len(ids) < CANCEL_BATCH_SIZE:
            break

    report = await ctx.dispatcher.deliver(only_ids=owed_ids, should_stop=ctx.should_stop)
    result.errors += report.errors
    result.details["messagesSent"] = report.sent
    return result


def _owe_cancellation(ctx: JobContext, records: list[bookings_db.BookingRecord], now: datetime) -> OwedMessages:
    owed = OwedMessages()
    for record in records:
        try:
            owed.extend(
                ctx.planner.plan(
                    MessageKind.BOOKING_CANCELLED, record, (Role.CLIENT, Role.PERFORMER), now=now, run_id=ctx.run_id
                )
            )
        except ContentError as exc:
            # The booking is still cancelled (the audit row says so); only its notices could not be written.
            owed.errors.append(f"booking {record.facts.reference}: cancellation notice not written: {exc}")
    return owed


async def cleanup_old_notifications(ctx: JobContext, now: datetime) -> JobResult:
    """Delete read notifications older than NOTIFICATION_RETENTION_DAYS; unread ones are kept forever."""
    cutoff = now - timedelta(days=ctx.settings.notification_retention_days)
    result = await _purge(ctx, JobName.CLEANUP_OLD_NOTIFICATIONS, cleanup_db.READ_NOTIFICATIONS, now, cutoff)
    if result.count and not ctx.dry_run and ctx.tables.has("audit_logs"):
        try:
            async with ctx.engine.begin() as conn:
                await bookings_db.insert_audit_entries(
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
        except SQLAlchemyError as exc:
            result.errors.append(f"writing the audit row failed: {describe_db_error(exc)}")
    return result


async def cleanup_expired_otps(ctx: JobContext, now: datetime) -> JobResult:
    """Delete one-time codes whose expiry has passed."""
    return await _purge(ctx, JobName.CLEANUP_EXPIRED_OTPS, cleanup_db.EXPIRED_OTPS, now, cutoff=now)


async def cleanup_old_audit_logs(ctx: JobContext, now: datetime) -> JobResult:
    """Delete audit rows older than AUDIT_LOG_RETENTION_DAYS, keeping AUDIT_LOG_KEEP_EVENT_TYPES forever."""
    cutoff = now - timedelta(days=ctx.settings.audit_log_retention_days)
    return await _purge(ctx, JobName.CLEANUP_OLD_AUDIT_LOGS, cleanup_db.OLD_AUDIT_LOGS, now, cutoff)


async def _purge(ctx: JobContext, job: JobName, purge: Purge, now: datetime, cutoff: datetime) -> JobResult:
    """Delete in batches of DELETE_BATCH_SIZE, each its own transaction; a failed batch ends the run."""
    result = JobResult(job, started_at=now, dry_run=ctx.dry_run)
    if purge.table != "notifications" and not ctx.tables.has(purge.table):
        result.skipped = "table_missing"
        ctx.log.warning("job_skipped_table_missing", table=purge.table)
        return result
    params = cleanup_db.purge_params(cutoff, ctx.settings.audit_log_keep_event_types)
    if ctx.dry_run:
        async with ctx.engine.connect() as conn:
            result.count = await cleanup_db.count_matching(conn, purge, params)
        return result

    after: tuple[int, int] | None = START_OF_TABLE
    batches = 0
    try:
        # One connection for the whole purge (no pool round trip per batch); one transaction per batch.
        async with ctx.engine.connect() as conn:
            while after is not None and not ctx.should_stop():
                async with conn.begin():
                    outcome = await cleanup_db.delete_batch(
                        conn, purge, params, after=after, batch_size=ctx.settings.delete_batch_size
                    )
                batches += 1
                result.count += outcome.deleted
                ctx.metrics.rows_deleted.labels(job_name=job, table=purge.table).inc(outcome.deleted)
                after = outcome.resume_after
    except SQLAlchemyError as exc:
        result.errors.append(f"deleting from {purge.table} failed after {result.count} rows: {describe_db_error(exc)}")
    result.details["batches"] = batches
    return result
