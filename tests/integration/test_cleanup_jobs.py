"""The four cleanup jobs against a real PostgreSQL, each rule at its boundaries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.jobs.report import result_json
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.factories import add_audit, add_booking, add_notification, add_otp, fetch, scalar

MINUTES = timedelta(minutes=5)


async def run(app: App, job: JobName, *, dry_run: bool = False):  # type: ignore[no-untyped-def]
    return await app.runner.run(job, trigger=Trigger.MANUAL, dry_run=dry_run)


async def status_of(engine: AsyncEngine, booking: dict) -> tuple[str, str]:  # type: ignore[type-arg]
    rows = await fetch(engine, "SELECT status, payment_status FROM bookings WHERE id = :id", id=booking["id"])
    return rows[0].status, rows[0].payment_status


# --- cleanup_stale_bookings ---------------------------------------------------------------------


async def test_stale_booking_cancelled_only_past_24_hours(app: App, engine: AsyncEngine) -> None:
    older = await add_booking(
        engine, status="pending", payment_status="pending", created_at=NOW - timedelta(hours=24) - MINUTES
    )
    younger = await add_booking(
        engine, status="pending", payment_status="pending", created_at=NOW - timedelta(hours=24) + MINUTES
    )
    paid = await add_booking(
        engine, status="pending", payment_status="deposit_paid", created_at=NOW - timedelta(days=3)
    )
    confirmed = await add_booking(
        engine, status="confirmed", payment_status="pending", created_at=NOW - timedelta(days=3)
    )

    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert result.count == 1
    assert result_json(result)["cancelledCount"] == 1
    assert await status_of(engine, older) == ("cancelled", "pending")
    assert await status_of(engine, younger) == ("pending", "pending")
    assert await status_of(engine, paid) == ("pending", "deposit_paid")
    assert await status_of(engine, confirmed) == ("confirmed", "pending")
    updated = await scalar(engine, "SELECT updated_at FROM bookings WHERE id = :id", id=older["id"])
    assert updated == NOW


async def test_cancellation_writes_audit_notices_and_messages(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    booking = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))

    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert result.success, result.errors
    audit = await fetch(engine, "SELECT event_type, action, booking_id, details FROM audit_logs")
    assert [(a.event_type, a.action, a.booking_id) for a in audit] == [
        ("booking", "auto_cancelled_stale", booking["id"])
    ]
    assert audit[0].details["reference"] == booking["booking_reference"]
    assert "reason" in audit[0].details
    notices = await fetch(engine, "SELECT user_id, type, is_read FROM notifications ORDER BY user_id")
    assert sorted(n.user_id for n in notices) == sorted([booking["client"]["user_id"], booking["performer"]["user_id"]])
    assert {n.type for n in notices} == {"booking_cancelled"}
    assert len(whatsapp.sent) == 2
    assert len(email.sent) == 2
    assert {m.to for m in email.sent} == {booking["client"]["email"], booking["performer"]["email"]}
    assert all(booking["booking_reference"] in m.text for m in [*whatsapp.sent, *email.sent])


async def test_deposit_arriving_during_the_run_is_not_cancelled(app: App, engine: AsyncEngine) -> None:
    """A booking locked by the payment webhook's transaction is left alone, then stays pending."""
    racing = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    other = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))

    async with engine.connect() as webhook:
        await webhook.execute(
            text("UPDATE bookings SET payment_status = 'deposit_paid' WHERE id = :id"), {"id": racing["id"]}
        )
        result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
        await webhook.commit()

    assert result.count == 1
    assert await status_of(engine, racing) == ("pending", "deposit_paid")
    assert await status_of(engine, other) == ("cancelled", "pending")


async def test_deposit_committed_while_the_real_cancel_runs_is_respected(app: App, engine: AsyncEngine) -> None:
    """The job's own statement (`cancel_stale_bookings`) runs while a payment webhook has paid the
    booking but not committed yet; the webhook commits while the statement is still running (or
    once it has passed the row by). Two guards keep the booking: the choice skips rows locked
    elsewhere, and the UPDATE repeats the staleness condition on the row it finally writes.
    Either one suffices; without both, this booking would be cancelled with its deposit paid."""
    from scheduler.db import bookings as bookings_db

    booking = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    other = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=3))
    async with engine.connect() as webhook:
        await webhook.execute(
            text("UPDATE bookings SET payment_status = 'deposit_paid' WHERE id = :id"), {"id": booking["id"]}
        )

        async def cancel() -> list[object]:
            async with app.db.begin() as conn:
                return list(
                    await bookings_db.cancel_stale_bookings(conn, cutoff=NOW - timedelta(hours=24), now=NOW, limit=10)
                )

        cancelling = asyncio.create_task(cancel())
        await _until_done_or_waiting(engine, cancelling)
        await webhook.commit()
        cancelled = await cancelling

    assert cancelled == [other["id"]]
    assert await status_of(engine, booking) == ("pending", "deposit_paid")
    assert await status_of(engine, other) == ("cancelled", "pending")


async def _until_done_or_waiting(engine: AsyncEngine, task: asyncio.Task[list[object]]) -> None:
    """Return once `task` has finished or its statement waits for a row lock."""
    for _ in range(500):
        if task.done():
            return
        waiting = await scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cancel neither finished nor waited")


async def test_stale_dry_run_reports_and_changes_nothing(app: App, engine: AsyncEngine) -> None:
    booking = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS, dry_run=True)
    assert result.count == 1
    assert result_json(result)["dryRun"] is True
    assert result.details["bookings"] == [booking["booking_reference"]]
    assert await status_of(engine, booking) == ("pending", "pending")


# --- cleanup_old_notifications ----------------------------------------------------------------


async def test_read_notifications_deleted_after_30_days_unread_kept(app: App, engine: AsyncEngine) -> None:
    read_31 = await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=31))
    read_29 = await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=29))
    unread_31 = await add_notification(engine, is_read=False, created_at=NOW - timedelta(days=31))
    unread_400 = await add_notification(engine, is_read=False, created_at=NOW - timedelta(days=400))

    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)

    assert result.count == 1
    remaining = {row.id for row in await fetch(engine, "SELECT id FROM notifications")}
    assert remaining == {read_29, unread_31, unread_400}
    assert read_31 not in remaining
    audit = await fetch(engine, "SELECT event_type, action, details FROM audit_logs")
    assert [(a.event_type, a.action) for a in audit] == [("system", "cleanup_old_notifications")]
    assert audit[0].details["count"] == 1
    assert "cutoff" in audit[0].details


async def test_no_audit_row_when_nothing_deleted(app: App, engine: AsyncEngine) -> None:
    await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=2))
    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)
    assert result.count == 0
    assert await scalar(engine, "SELECT count(*) FROM audit_logs") == 0


# --- cleanup_expired_otps ----------------------------------------------------------------------


async def test_expired_otps_deleted_future_kept(app: App, engine: AsyncEngine) -> None:
    await add_otp(engine, NOW - timedelta(seconds=1))
    await add_otp(engine, NOW - timedelta(days=3))
    await add_otp(engine, NOW + timedelta(seconds=1))
    result = await run(app, JobName.CLEANUP_EXPIRED_OTPS)
    assert result.count == 2
    assert await scalar(engine, "SELECT count(*) FROM otp_codes") == 1


# --- cleanup_old_audit_logs ------------------------------------------------------------------------


async def test_audit_logs_past_90_days_deleted_except_kept_types(app: App, engine: AsyncEngine) -> None:
    old = NOW - timedelta(days=90) - MINUTES
    for event_type in ("security", "fraud", "dispute", "login", "booking", None):
        await add_audit(engine, event_type=event_type, timestamp=old)
    await add_audit(engine, event_type="login", timestamp=NOW - timedelta(days=90) + MINUTES)

    result = await run(app, JobName.CLEANUP_OLD_AUDIT_LOGS)

    assert result.count == 3
    kept = sorted(str(row.event_type) for row in await fetch(engine, "SELECT event_type FROM audit_logs"))
    assert kept == ["dispute", "fraud", "login", "security"]


async def test_keep_types_come_from_settings(app: App, engine: AsyncEngine) -> None:
    app.runner.deps = app.runner.deps.__class__(
        **{
            **{f: getattr(app.runner.deps, f) for f in app.runner.deps.__dataclass_fields__},
            "settings": app.settings.model_copy(update={"audit_log_keep_event_types": ("login",)}),
        }
    )
    await add_audit(engine, event_type="login", timestamp=NOW - timedelta(days=100))
    await add_audit(engine, event_type="security", timestamp=NOW - timedelta(days=100))
    result = await run(app, JobName.CLEANUP_OLD_AUDIT_LOGS)
    assert result.count == 1
    assert [row.event_type for row in await fetch(engine, "SELECT event_type FROM audit_logs")] == ["login"]


# --- batching -----------------------------------------------------------------------------------------


async def test_batches_of_delete_batch_size_each_its_own_transaction(app: App, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                "SELECT gen_random_uuid(), 'info', 't', 'm', true, :old FROM generate_series(1, 12345)"
            ),
            {"old": NOW - timedelta(days=40)},
        )
        await conn.execute(
            text(
                "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                "SELECT gen_random_uuid(), 'info', 't', 'm', true, :recent FROM generate_series(1, 500)"
            ),
            {"recent": NOW - timedelta(days=1)},
        )
    xact_before = await scalar(engine, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    settings = app.settings.model_copy(update={"delete_batch_size": 1000})
    app.runner.deps = app.runner.deps.__class__(
        **{**{f: getattr(app.runner.deps, f) for f in app.runner.deps.__dataclass_fields__}, "settings": settings}
    )

    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)

    assert result.count == 12345
    assert result.details["batches"] == 13
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 500
    deleted = app.registry.get_sample_value(
        "flavor_scheduler_rows_deleted_total", {"job_name": "cleanup_old_notifications", "table": "notifications"}
    )
    assert deleted == 12345
    assert xact_before is not None


async def test_dry_run_leaves_every_table_unchanged(app: App, engine: AsyncEngine) -> None:
    await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    await add_booking(engine, event_date=NOW + timedelta(hours=5))
    await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=40))
    await add_otp(engine, NOW - timedelta(days=1))
    await add_audit(engine, event_type="login", timestamp=NOW - timedelta(days=100))

    before = await _snapshot(engine)
    for job in JobName:
        result = await run(app, job, dry_run=True)
        assert result.dry_run
    assert await _snapshot(engine) == before


async def _snapshot(engine: AsyncEngine) -> dict[str, list[str]]:
    tables = [
        "bookings", "clients", "performers", "notifications", "otp_codes", "audit_logs", "notification_preferences",
        "flavor_scheduler.job_runs", "flavor_scheduler.deliveries", "flavor_scheduler.booking_reminders",
    ]  # fmt: skip
    snapshot = {}
    for table in tables:
        rows = await fetch(engine, f"SELECT t::text AS row FROM {table} t ORDER BY 1")
        snapshot[table] = [row.row for row in rows]
    return snapshot


# --- optional and required tables -------------------------------------------------------------------


async def test_missing_optional_tables_skip_with_warning(app: App, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE otp_codes"))
        await conn.execute(text("DROP TABLE audit_logs"))
    await app.prepare_database()
    await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=40))
    await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))

    otps = await run(app, JobName.CLEANUP_EXPIRED_OTPS)
    audits = await run(app, JobName.CLEANUP_OLD_AUDIT_LOGS)
    notifications = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)
    stale = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert otps.success and otps.skipped == "table_missing"
    assert audits.success and audits.skipped == "table_missing"
    assert notifications.success and notifications.count == 1
    assert stale.success and stale.count == 1
    skipped = app.registry.get_sample_value(
        "flavor_scheduler_job_skipped_total", {"job_name": "cleanup_expired_otps", "reason": "table_missing"}
    )
    assert skipped == 1


async def test_missing_required_table_is_named(app: App, engine: AsyncEngine) -> None:
    import pytest

    from scheduler.db.platform import PlatformSchemaError

    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE performers"))
    with pytest.raises(PlatformSchemaError, match="performers"):
        await app.prepare_database()


async def test_frozen_clock_is_the_only_time(clock: FrozenClock, app: App, engine: AsyncEngine) -> None:
    """Moving the clock moves the job's notion of now: no hidden datetime.now()."""
    booking = await add_booking(
        engine, status="pending", payment_status="pending", created_at=NOW - timedelta(hours=20)
    )
    assert (await run(app, JobName.CLEANUP_STALE_BOOKINGS)).count == 0
    clock.advance(timedelta(hours=5).total_seconds())
    assert (await run(app, JobName.CLEANUP_STALE_BOOKINGS)).count == 1
    assert await status_of(engine, booking) == ("cancelled", "pending")


async def test_no_batch_deletes_more_than_the_batch_size(engine: AsyncEngine) -> None:
    """Read notifications interleaved with unread ones: every batch holds at most 1,000 rows."""
    from scheduler.db import cleanup as cleanup_db

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                "SELECT gen_random_uuid(), 'info', 't', 'm', g % 3 <> 0, :old FROM generate_series(1, 18517) g"
            ),
            {"old": NOW - timedelta(days=40)},
        )
    params = cleanup_db.purge_params(NOW - timedelta(days=30))
    after: tuple[int, int] | None = cleanup_db.START_OF_TABLE
    deleted = []
    while after is not None:
        async with engine.begin() as conn:
            outcome = await cleanup_db.delete_batch(
                conn, cleanup_db.READ_NOTIFICATIONS, params, after=after, batch_size=1000
            )
        deleted.append(outcome.deleted)
        after = outcome.resume_after
    assert sum(deleted) == 12345
    assert max(deleted) == 1000
    assert len(deleted) == 13
    assert await scalar(engine, "SELECT count(*) FROM notifications WHERE is_read") == 0
