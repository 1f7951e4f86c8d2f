"""A message is true when it leaves (CONTRACT §2): a message left for a later run during an outage
is re-checked against its booking as it stands when it is about to be sent, and made `void` with
its reason when it no longer holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.factories import add_booking, fetch, set_preferences

HOUR = timedelta(hours=1)
Change = Callable[[AsyncEngine, dict[str, Any]], Awaitable[None]]


async def _set(engine: AsyncEngine, booking: dict[str, Any], **values: Any) -> None:
    """What the platform does to the booking meanwhile."""
    columns = ", ".join(f"{name} = :{name}" for name in values)
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE bookings SET {columns} WHERE id = :id"), {"id": booking["id"], **values})


async def cancelled(engine: AsyncEngine, booking: dict[str, Any]) -> None:
    await _set(engine, booking, status="cancelled")


async def moved_a_week(engine: AsyncEngine, booking: dict[str, Any]) -> None:
    await _set(engine, booking, event_date=booking["event_date"] + timedelta(days=7))


async def balance_paid(engine: AsyncEngine, booking: dict[str, Any]) -> None:
    await _set(engine, booking, payment_status="paid")


async def client_opted_out(engine: AsyncEngine, booking: dict[str, Any]) -> None:
    await set_preferences(engine, booking["client"]["user_id"], sms_notifications=False, email_notifications=False)


async def nothing(engine: AsyncEngine, booking: dict[str, Any]) -> None:
    return None


async def run(app: App, job: JobName) -> Any:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


@pytest.mark.parametrize(
    ("job", "change", "hours_later", "reason", "client_only"),
    [
        (JobName.SEND_BOOKING_REMINDERS, cancelled, 1, "the booking is cancelled now", False),
        (JobName.SEND_BOOKING_REMINDERS, moved_a_week, 1, "the event was moved", False),
        (JobName.SEND_BOOKING_REMINDERS, nothing, 5, "the event is less than 60 minutes away", False),
        (JobName.SEND_BOOKING_REMINDERS, client_opted_out, 1, "the recipient opted out", True),
        (JobName.SEND_PAYMENT_REMINDERS, balance_paid, 1, "the payment status is paid now", True),
    ],
)
async def test_a_message_deferred_then_no_longer_true_is_void_not_sent(
    app: App,
    clock: FrozenClock,
    engine: AsyncEngine,
    whatsapp: RecordingTransport,
    email: RecordingTransport,
    job: JobName,
    change: Change,
    hours_later: int,
    reason: str,
    client_only: bool,
) -> None:
    booking = await add_booking(engine, event_date=NOW + 5 * HOUR + timedelta(minutes=30))
    whatsapp.fail_next(100)  # an outage: every message is left for a later run
    email.fail_next(100)
    first = await run(app, job)
    assert first.messages[MessageState.RETRYING] > 0 and not whatsapp.sent and not email.sent
    whatsapp.recover()
    email.recover()

    await change(engine, booking)
    clock.advance(hours_later * 3600)
    later = await run(app, JobName.DELIVER_PENDING_MESSAGES)

    rows = await fetch(engine, "SELECT recipient_role, status, last_error FROM flavor_scheduler.deliveries")
    voided = [row for row in rows if row.status == "void"]
    assert voided and all(row.last_error.startswith(reason) for row in voided)
    if client_only:
        assert {row.recipient_role for row in voided} == {"client"}
    else:
        assert len(voided) == len(rows)
    assert later.messages[MessageState.VOID] == len(voided)
    assert later.success  # void is not an error
    sent_to = {message.to for message in [*whatsapp.sent, *email.sent]}
    client = booking["client"]
    assert not sent_to & {client["email"], "+61" + client["phone"].removeprefix("0").replace(" ", "")}
    kind = "payment_reminder" if job is JobName.SEND_PAYMENT_REMINDERS else "booking_reminder"
    labels = {"channel": "email", "kind": kind, "outcome": "void"}
    assert (app.registry.get_sample_value("flavor_scheduler_messages_total", labels) or 0) >= 1


async def test_a_moved_booking_is_owed_a_fresh_reminder_for_its_new_date(
    app: App, clock: FrozenClock, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    booking = await add_booking(engine, event_date=NOW + 5 * HOUR)
    whatsapp.fail_next(100)
    email.fail_next(100)
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    whatsapp.recover()
    email.recover()
    new_date = booking["event_date"] + 2 * HOUR
    await _set(engine, booking, event_date=new_date)

    clock.advance(1800)  # their next attempt comes
    await run(app, JobName.DELIVER_PENDING_MESSAGES)  # the old date's messages: void
    again = await run(app, JobName.SEND_BOOKING_REMINDERS)  # the new date's: owed and sent

    assert again.count == 1 and again.messages[MessageState.SENT] == 4
    statuses = await fetch(engine, "SELECT event_date, status FROM flavor_scheduler.deliveries ORDER BY created_at")
    assert {(row.event_date, row.status) for row in statuses} == {
        (booking["event_date"], "void"),
        (new_date, "sent"),
    }
