"""Rows that cannot be written fail alone (CONTRACT §2): a platform table with a NOT NULL column
the daemon does not know, a trigger that raises, a date or amount the daemon cannot represent.
The cancellation, the reminder ledger and every other row and message of the batch still commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.jobs.result import JobResult
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.factories import add_booking, add_notification, fetch, scalar

HOUR = timedelta(hours=1)
STALE = {"status": "pending", "payment_status": "pending", "created_at": NOW - timedelta(days=2)}


async def run(app: App, job: JobName) -> JobResult:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


async def execute(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def audit_needs_an_ip_address(engine: AsyncEngine) -> None:
    """The platform added a column the daemon does not know, NOT NULL and without a default."""
    await execute(engine, "ALTER TABLE audit_logs ADD COLUMN ip_address inet NOT NULL")


async def notifications_refused_for(engine: AsyncEngine, user_id: Any) -> None:
    """A trigger that raises for one user's notifications (and lets every other through)."""
    await execute(
        engine,
        f"""
        CREATE FUNCTION refuse_notice() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = '{user_id}' THEN
                RAISE EXCEPTION 'notifications are closed for this account';
            END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER refuse_notice BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION refuse_notice()",
    )


@contextmanager
def statements(app: App) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the block runs."""
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    sync_engine = app.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(sync_engine, "before_cursor_execute", seen)


def inserts_into(sent: list[str], table: str) -> int:
    return sum(1 for statement in sent if statement.startswith(f"INSERT INTO {table} "))


# --- cleanup_stale_bookings ----------------------------------------------------------------------


async def test_unknown_not_null_audit_column_fails_the_audit_rows_alone(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    stale = [await add_booking(engine, **STALE) for _ in range(2)]
    await audit_needs_an_ip_address(engine)

    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert result.count == 2
    assert await scalar(engine, "SELECT count(*) FROM bookings WHERE status = 'cancelled'") == 2
    assert await scalar(engine, "SELECT count(*) FROM audit_logs") == 0
    assert await scalar(engine, "SELECT count(*) FROM notifications WHERE type = 'booking_cancelled'") == 4
    assert len(whatsapp.sent) == 4 and len(email.sent) == 4
    assert not result.success
    assert len(result.errors) == 2, result.errors
    for booking, error in zip(stale, sorted(result.errors), strict=True):
        assert f"booking {booking['booking_reference']}:" in error
        assert "audit_logs" in error and "ip_address" in error
        assert "\n" not in error
    again = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
    assert (again.count, again.errors) == (0, [])


async def test_a_trigger_refusing_one_notice_fails_that_notice_alone(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    refused = await add_booking(engine, **STALE)
    fine = await add_booking(engine, **STALE)
    await notifications_refused_for(engine, refused["client"]["user_id"])

    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert result.count == 2
    [error] = result.errors
    assert f"booking {refused['booking_reference']}:" in error
    assert "notifications" in error and "notifications are closed for this account" in error
    notices = await fetch(engine, "SELECT user_id FROM notifications")
    assert {n.user_id for n in notices} == {
        refused["performer"]["user_id"],
        fine["client"]["user_id"],
        fine["performer"]["user_id"],
    }
    assert await scalar(engine, "SELECT count(*) FROM audit_logs WHERE action = 'auto_cancelled_stale'") == 2
    assert len(whatsapp.sent) == 4 and len(email.sent) == 4  # the refused booking's client is still told


@pytest.mark.parametrize(
    "event_date",
    ["9999-12-31 23:00+00", "12000-06-01 00:00+00", "infinity"],
    ids=["year 9999", "year 12000", "infinity"],
)
async def test_an_event_date_out_of_range_fails_that_booking_alone(
    app: App, engine: AsyncEngine, email: RecordingTransport, event_date: str
) -> None:
    far = await add_booking(engine, **STALE)
    await execute(engine, f"UPDATE bookings SET event_date = '{event_date}' WHERE id = '{far['id']}'")
    fine = await add_booking(engine, **STALE)

    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert result.count == 2
    [error] = result.errors
    assert f"booking {far['booking_reference']}: cancellation notice not written" in error
    assert "out of range" in error
    assert await scalar(engine, "SELECT count(*) FROM bookings WHERE status = 'cancelled'") == 2
    audited = await fetch(engine, "SELECT booking_id FROM audit_logs")
    assert {row.booking_id for row in audited} == {far["id"], fine["id"]}  # the cancellation is on record
    assert {m.booking_reference for m in email.sent} == {fine["booking_reference"]}
    assert len(email.sent) == 2


async def test_an_event_date_before_the_year_1_does_not_stop_the_batch(
    app: App, engine: AsyncEngine, email: RecordingTransport
) -> None:
    ancient = await add_booking(engine, **STALE)
    await execute(engine, f"UPDATE bookings SET event_date = '-infinity' WHERE id = '{ancient['id']}'")
    fine = await add_booking(engine, **STALE)
    result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
    assert result.count == 2
    assert await scalar(engine, "SELECT count(*) FROM bookings WHERE status = 'cancelled'") == 2
    assert fine["booking_reference"] in {m.booking_reference for m in email.sent}


async def test_the_good_case_writes_each_platform_table_in_one_statement(app: App, engine: AsyncEngine) -> None:
    for _ in range(3):
        await add_booking(engine, **STALE)
    with statements(app) as sent:
        result = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
    assert result.success, result.errors
    assert inserts_into(sent, "notifications") == 1
    assert inserts_into(sent, "audit_logs") == 1


async def test_the_old_notifications_audit_row_refused_is_an_error_the_deletion_stands(
    app: App, engine: AsyncEngine
) -> None:
    await add_notification(engine, is_read=True, created_at=NOW - timedelta(days=40))
    await audit_needs_an_ip_address(engine)
    result = await run(app, JobName.CLEANUP_OLD_NOTIFICATIONS)
    assert result.count == 1
    [error] = result.errors
    assert "audit_logs" in error and "ip_address" in error
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 0


# --- reminders -------------------------------------------------------------------------------------


async def test_reminders_with_an_unwritable_audit_row_still_send_and_record_the_ledger(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    due = [await add_booking(engine, event_date=NOW + (5 + n) * HOUR) for n in range(2)]
    await audit_needs_an_ip_address(engine)

    result = await run(app, JobName.SEND_BOOKING_REMINDERS)

    assert result.count == 2
    assert len(whatsapp.sent) == 4 and len(email.sent) == 4
    assert await scalar(engine, "SELECT count(*) FROM notifications WHERE type = 'booking_reminder'") == 4
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.booking_reminders") == 2
    assert len(result.errors) == 2, result.errors
    for booking in due:
        assert any(
            f"booking {booking['booking_reference']}:" in error and "audit_logs" in error and "ip_address" in error
            for error in result.errors
        )
    again = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert (again.count, again.errors) == (0, [])
    assert len(email.sent) == 4


async def test_a_refused_reminder_notice_fails_alone(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    refused = await add_booking(engine, event_date=NOW + 5 * HOUR)
    fine = await add_booking(engine, event_date=NOW + 6 * HOUR)
    await notifications_refused_for(engine, refused["performer"]["user_id"])

    result = await run(app, JobName.SEND_BOOKING_REMINDERS)

    [error] = result.errors
    assert f"booking {refused['booking_reference']}:" in error and "notifications" in error
    assert result.count == 2
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 3
    assert await scalar(engine, "SELECT count(*) FROM audit_logs") == 2
    assert {m.booking_reference for m in email.sent} == {refused["booking_reference"], fine["booking_reference"]}
    assert len(whatsapp.sent) == 4 and len(email.sent) == 4
    in_app = app.registry.get_sample_value(
        "flavor_scheduler_reminders_sent_total", {"kind": "booking", "channel": "in_app"}
    )
    assert in_app == 3


async def test_an_amount_out_of_range_fails_that_payment_reminder_alone(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    await execute(engine, "ALTER TABLE bookings ALTER COLUMN total_amount TYPE numeric")
    huge = await add_booking(engine, event_date=NOW + 30 * HOUR, total_amount=Decimal("1e40"))
    fine = await add_booking(engine, event_date=NOW + 31 * HOUR)

    result = await run(app, JobName.SEND_PAYMENT_REMINDERS)

    [error] = result.errors
    assert f"booking {huge['booking_reference']}: payment_reminder not written" in error
    assert "out of range" in error
    assert result.count == 1
    assert [m.booking_reference for m in email.sent] == [fine["booking_reference"]]
    assert "$1,000.00" in email.sent[0].text
