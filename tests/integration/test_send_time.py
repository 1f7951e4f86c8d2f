"""A message is true when it leaves (CONTRACT §2): a message left for a later run during an outage
is re-checked against its booking as it stands when it is about to be sent, and made `void` with
its reason when it no longer holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, add_performer, fetch, scalar, set_preferences
from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeResend, FakeTwilio, Reply

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


# --- the text written afresh, through the real SDKs against the stand-in servers ------------------


@pytest.fixture
async def live_app(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock
) -> AsyncIterator[App]:
    settings = Settings(
        _env_file=None,
        database_url=to_libpq(database_url),
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_api_base_url=twilio_server.url,
        resend_api_key=RESEND_API_KEY,
        resend_api_url=resend_server.url,
        quiet_hours="off",
    )
    app = build(settings, clock=clock)
    await app.prepare_database()
    try:
        yield app
    finally:
        await app.aclose()


async def one_recipient_booking(engine: AsyncEngine) -> dict[str, Any]:
    """A booking whose client has a phone and an email, its performer neither: one message each."""
    client = await add_client(engine, first_name="Ava", phone="0412 345 678", email="ava@example.com")
    performer = await add_performer(engine, stage_name="Velvet Storm", phone=None, email=None)
    return await add_booking(engine, client=client, performer=performer, event_date=NOW + 23 * HOUR)


OUTAGE = 3  # answers that use up the tries of one run: the message is left for a later run


async def test_a_message_left_for_later_says_what_is_true_when_it_leaves(
    live_app: App, clock: FrozenClock, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    booking = await one_recipient_booking(engine)
    twilio_server.script(*[Reply.twilio_error(503, 20503, "Service Unavailable")] * OUTAGE)
    resend_server.script(*[Reply.resend_error(503, "internal_server_error", "down")] * OUTAGE)
    first = await run(live_app, JobName.SEND_BOOKING_REMINDERS)
    assert first.messages[MessageState.RETRYING] == 2
    assert all("in 23 hours" in request.form["Body"] for request in twilio_server.requests_to("send") if request.form)

    await _set(engine, booking, venue_address="The Rooftop, 1 Hay St, Perth WA 6000")
    clock.advance(3 * 3600)
    later = await run(live_app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.success and later.messages[MessageState.SENT] == 2
    [whatsapp] = twilio_server.accepted
    assert "in 20 hours" in whatsapp.body and "The Rooftop, 1 Hay St" in whatsapp.body
    [email] = resend_server.accepted
    assert "in 20 hours" in email.payload["text"] and "The Rooftop, 1 Hay St" in email.payload["html"]
    # One key for the delivery on every attempt, whatever its text (notify/send_time.py says why).
    delivery_id = await scalar(engine, "SELECT id FROM flavor_scheduler.deliveries WHERE channel = 'email'")
    keys = {request.headers["Idempotency-Key"] for request in resend_server.requests_to("send")}
    assert keys == {str(delivery_id)}
    stored = await fetch(engine, "SELECT body_text FROM flavor_scheduler.deliveries")
    assert all("in 20 hours" in row.body_text for row in stored)  # the record says what was sent


async def test_an_email_whose_answer_was_lost_is_not_sent_again_in_new_words(
    live_app: App, clock: FrozenClock, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    await one_recipient_booking(engine)
    lost = [Reply.accept_then_drop(), *[Reply.resend_error(503, "internal_server_error", "down")] * (OUTAGE - 1)]
    resend_server.script(*lost)
    first = await run(live_app, JobName.SEND_BOOKING_REMINDERS)
    assert first.messages[MessageState.RETRYING] == 1 and len(resend_server.accepted) == 1
    assert "in 23 hours" in resend_server.accepted[0].payload["text"]

    clock.advance(3 * 3600)  # the text is now "in 20 hours": another payload under the same key
    later = await run(live_app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.success and later.messages[MessageState.SENT] == 1 and later.errors == []
    assert resend_server.requests_to("send")[-1].answer == "409"  # Resend: that key was sent already
    assert len(resend_server.accepted) == 1  # never twice
    row = (
        await fetch(
            engine, "SELECT status, provider_message_id FROM flavor_scheduler.deliveries WHERE channel = 'email'"
        )
    )[0]
    assert (row.status, row.provider_message_id) == ("sent", None)  # Resend did not say its id again


@pytest.mark.parametrize("reached_twilio", [True, False])
async def test_a_whatsapp_whose_answer_was_lost_is_looked_for_in_its_earlier_words(
    live_app: App, clock: FrozenClock, engine: AsyncEngine, twilio_server: FakeTwilio, reached_twilio: bool
) -> None:
    await one_recipient_booking(engine)
    dropped = Reply.accept_then_drop() if reached_twilio else Reply(drop=True)
    twilio_server.script(dropped)
    # Twilio cannot even list its messages for the rest of that run: the question is left for later.
    twilio_server.script(*[Reply.twilio_error(503, 20503, "Service Unavailable")] * (OUTAGE - 1), route="list")
    first = await run(live_app, JobName.SEND_BOOKING_REMINDERS)
    assert first.messages[MessageState.RETRYING] == 1

    clock.advance(3 * 3600)
    later = await run(live_app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.success and later.messages[MessageState.SENT] == 1
    [whatsapp] = twilio_server.accepted  # exactly one, found or sent
    assert ("in 23 hours" in whatsapp.body) is reached_twilio  # found as it went, or sent true now
    assert ("in 20 hours" in whatsapp.body) is not reached_twilio
    assert twilio_server.requests_to("list")  # looked for before sending again
    provider_id = await scalar(
        engine, "SELECT provider_message_id FROM flavor_scheduler.deliveries WHERE channel = 'whatsapp'"
    )
    assert provider_id == whatsapp.sid


async def test_a_message_that_can_no_longer_be_written_fails_alone_with_its_reason(
    app: App, clock: FrozenClock, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    kept = await add_booking(engine, event_date=NOW + 5 * HOUR)
    broken = await add_booking(engine, event_date=NOW + 6 * HOUR)
    whatsapp.fail_next(100)
    email.fail_next(100)
    await run(app, JobName.SEND_PAYMENT_REMINDERS)
    whatsapp.recover()
    email.recover()
    await _set(engine, broken, deposit_amount=None)  # the balance cannot be stated any more

    clock.advance(3600)
    later = await run(app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.messages[MessageState.SENT] == 2 and later.messages[MessageState.FAILED] == 2
    assert len(later.errors) == 2 and all(broken["booking_reference"] in error for error in later.errors)
    assert all("cannot be written now" in error for error in later.errors)
    assert {sent.message.booking_reference for sent in [*whatsapp.accepted, *email.accepted]} == {
        kept["booking_reference"]
    }
