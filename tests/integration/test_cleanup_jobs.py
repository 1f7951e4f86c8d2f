"""The four cleanup jobs against a real PostgreSQL, each rule at its boundaries."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.jobs.report import result_json
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.factories import add_audit, add_booking, add_notification, add_otp, execute, fetch, scalar

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


async def log_deletes(engine: AsyncEngine, table: str) -> None:
    """Every DELETE statement on `table` logs its transaction and rows to `delete_log`, and counts
    itself in the sequence `delete_attempts`, rolled back or not (a sequence is not rolled back)."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE delete_attempts"))
        await conn.execute(text("CREATE TABLE delete_log (xact xid8 DEFAULT pg_current_xact_id(), deleted bigint)"))
        await conn.execute(
            text(
                "CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM nextval('delete_attempts'); "
                "INSERT INTO delete_log (deleted) SELECT count(*) FROM gone; RETURN NULL; END $$"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER log_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS gone "
                "FOR EACH STATEMENT EXECUTE FUNCTION log_delete()"
            )
        )


async def committed_deletes(engine: AsyncEngine) -> list[int]:
    """The rows each committed transaction deleted, in order, leaving out those that deleted none."""
    rows = await fetch(
        engine,
        "SELECT sum(deleted) AS deleted FROM delete_log GROUP BY xact HAVING sum(deleted) > 0 "
        "ORDER BY xact::text::bigint",
    )
    return [int(row.deleted) for row in rows]


async def delete_attempts(engine: AsyncEngine) -> int:
    """DELETE statements run, those rolled back included."""
    return int(await scalar(engine, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM delete_attempts"))


async def add_read_notifications(engine: AsyncEngine, rows: int, *, every: int = 1, days_old: int = 40) -> None:
    """`rows` old notifications, every `every`-th unread (kept), the rest read (to be deleted)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                "SELECT gen_random_uuid(), 'info', 't', 'm', :every = 1 OR g % :every <> 0, :at "
                "FROM generate_series(1, :rows) g"
            ),
            {"rows": rows, "every": every, "at": NOW - timedelta(days=days_old)},
        )


def with_delete_batch_size(app: App, size: int) -> None:
    app.runner.deps = replace(app.runner.deps, settings=app.settings.model_copy(update={"delete_batch_size": size}))


async def test_a_table_never_analysed_is_taken_a_batch_at_a_time_each_its_own_transaction(
    app: App, engine: AsyncEngine
) -> None:
    # Without statistics the walk cannot size a range: each batch is found exactly.
    await execute(engine, "ALTER TABLE notifications SET (autovacuum_enabled = false)")
    await add_read_notifications(engine, 12345)
    await add_read_notifications(engine, 500, days_old=1)
    await log_deletes(engine, "notifications")
    with_delete_batch_size(app, 1000)

    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)

    assert result.count == 12345
    assert result.details["batches"] == 13
    assert await committed_deletes(engine) == [1000] * 12 + [345]
    assert await delete_attempts(engine) == 13
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 500
    deleted = app.registry.get_sample_value(
        "flavor_scheduler_rows_deleted_total", {"job_name": "cleanup_old_notifications", "table": "notifications"}
    )
    assert deleted == 12345


async def test_dense_rows_go_a_sized_range_at_a_time_never_over_the_batch_size(app: App, engine: AsyncEngine) -> None:
    """Two read rows in three: dense enough for ranges sized by density, one scan each."""
    await add_read_notifications(engine, 18517, every=3)
    await add_read_notifications(engine, 500, days_old=1)
    await execute(engine, "ANALYZE notifications")
    await log_deletes(engine, "notifications")
    with_delete_batch_size(app, 1000)

    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)

    assert result.count == 12345
    per_transaction = await committed_deletes(engine)
    assert sum(per_transaction) == 12345
    assert max(per_transaction) <= 1000
    # Sized ranges aim at 90 % of a batch: more transactions than whole batches would take, and
    # none of them rolled back (the density does not change).
    assert len(per_transaction) > 13
    assert await delete_attempts(engine) == result.details["batches"]
    assert (
        await scalar(
            engine, "SELECT count(*) FROM notifications WHERE is_read AND created_at < :at", at=NOW - timedelta(days=30)
        )
        == 0
    )
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 500 + 18517 - 12345


async def test_a_range_that_turns_out_over_the_batch_size_is_rolled_back_and_taken_exactly(
    app: App, engine: AsyncEngine
) -> None:
    """Two read rows in three, then only read rows: the range sized from the first density holds
    half as many again, so it is rolled back and that batch found exactly."""
    await add_read_notifications(engine, 4500, every=3)
    await add_read_notifications(engine, 6000)
    await execute(engine, "ANALYZE notifications")
    await log_deletes(engine, "notifications")
    with_delete_batch_size(app, 1000)

    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)

    assert result.success, result.errors
    assert result.count == 3000 + 6000
    per_transaction = await committed_deletes(engine)
    assert sum(per_transaction) == 9000
    assert max(per_transaction) <= 1000
    assert await delete_attempts(engine) > result.details["batches"], "no range was rolled back"
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 1500


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
