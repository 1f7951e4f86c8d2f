"""The reminder jobs against a real PostgreSQL (recording transports): CONTRACT §2's reminder rules."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.jobs.context import JobContext
from scheduler.jobs.reminders import send_booking_reminders
from scheduler.jobs.report import result_json
from scheduler.jobs.result import JobResult
from scheduler.limits import Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.notify.transport import PermanentSendError
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, MessageState, RunOutcome, Trigger
from tests.conftest import NOW, recording_app
from tests.factories import add_booking, add_client, fetch, scalar, set_preferences

HOUR = timedelta(hours=1)


async def run(app: App, job: JobName) -> JobResult:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


def with_settings(app: App, **changes: Any) -> None:
    app.runner.deps = dataclasses.replace(app.runner.deps, settings=app.settings.model_copy(update=changes))


async def test_booking_reminder_to_client_and_performer_on_every_channel(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    booking = await add_booking(engine, event_date=NOW + 23 * HOUR)

    result = await run(app, JobName.SEND_BOOKING_REMINDERS)

    assert result.success, result.errors
    assert result_json(result)["remindersSent"] == 1
    assert {m.to for m in whatsapp.sent} == {
        "+61412345" + booking["client"]["phone"][-3:],
        "+61423456" + booking["performer"]["phone"][-3:],
    }
    assert {m.to for m in email.sent} == {booking["client"]["email"], booking["performer"]["email"]}
    assert all(m.kind == "booking_reminder" for m in [*whatsapp.sent, *email.sent])
    assert all(booking["booking_reference"] in m.text for m in [*whatsapp.sent, *email.sent])
    assert all("Monday 30 November 2026, 5:00 pm" in m.text for m in email.sent)  # 09:00Z in Perth
    notices = await fetch(engine, "SELECT user_id, type, booking_id FROM notifications")
    assert {(n.user_id, n.type) for n in notices} == {
        (booking["client"]["user_id"], "booking_reminder"),
        (booking["performer"]["user_id"], "booking_reminder"),
    }
    audit = await fetch(engine, "SELECT action, booking_id FROM audit_logs")
    assert [(a.action, a.booking_id) for a in audit] == [("reminder_sent", booking["id"])]


async def test_horizon_and_lead_time_boundaries(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    inside = [
        await add_booking(engine, event_date=NOW + 24 * HOUR),
        await add_booking(engine, event_date=NOW + 24 * HOUR - timedelta(minutes=5)),
        await add_booking(engine, event_date=NOW + timedelta(minutes=65)),
    ]
    outside = [
        await add_booking(engine, event_date=NOW + 24 * HOUR + timedelta(minutes=5)),
        await add_booking(engine, event_date=NOW + timedelta(minutes=60)),
        await add_booking(engine, event_date=NOW + timedelta(minutes=55)),
        await add_booking(engine, event_date=NOW - HOUR),
        await add_booking(engine, event_date=None),
    ]
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    reminded = {m.booking_reference for m in email.sent}
    assert reminded == {b["booking_reference"] for b in inside}
    assert not reminded & {b["booking_reference"] for b in outside}
    assert result.count == 3


async def test_only_active_bookings(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    statuses = ["confirmed", "in_progress", "pending", "cancelled", "completed"]
    made = {status: await add_booking(engine, status=status, event_date=NOW + 5 * HOUR) for status in statuses}
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert {m.booking_reference for m in email.sent} == {
        made["confirmed"]["booking_reference"],
        made["in_progress"]["booking_reference"],
    }


async def test_a_second_run_sends_nothing(app: App, engine: AsyncEngine, whatsapp: RecordingTransport) -> None:
    await add_booking(engine, event_date=NOW + 5 * HOUR)
    first = await run(app, JobName.SEND_BOOKING_REMINDERS)
    second = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert (first.count, second.count) == (1, 0)
    assert len(whatsapp.sent) == 2
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 2


async def test_reschedule_owes_a_new_reminder(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    booking = await add_booking(engine, event_date=NOW + 5 * HOUR)
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    async with engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE bookings SET event_date = :d WHERE id = :id"), {"d": NOW + 8 * HOUR, "id": booking["id"]}
        )
    again = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert again.count == 1
    assert len(email.sent) == 4


async def test_due_based_after_downtime_and_late_confirmation(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    """A booking that became due while nothing ran is still reminded, if the event is > 60 min away."""
    missed = await add_booking(engine, event_date=NOW + 3 * HOUR)  # due for 21 hours already
    late = await add_booking(engine, event_date=NOW + 2 * HOUR, created_at=NOW - HOUR)
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert result.count == 2
    assert {m.booking_reference for m in email.sent} == {missed["booking_reference"], late["booking_reference"]}


async def test_missing_phone_or_email_is_not_an_error(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    client = await add_client(engine, phone=None, email="")
    booking = await add_booking(engine, client=client, event_date=NOW + 5 * HOUR)
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert result.success, result.errors
    assert [m.to for m in email.sent] == [booking["performer"]["email"]]
    assert len(whatsapp.sent) == 1
    assert result.count == 1


async def test_invalid_phone_fails_that_message_only(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    client = await add_client(engine, phone="12345")
    booking = await add_booking(engine, client=client, event_date=NOW + 5 * HOUR)
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert not result.success
    # The run did its work: partial, never an error run (JobFailing is for those; MessagesFailing
    # covers failing messages).
    assert result.outcome is RunOutcome.PARTIAL
    runs_total = "flavor_scheduler_job_runs_total"
    for outcome, count in (("partial", 1), ("error", 0)):
        labels = {"job_name": JobName.SEND_BOOKING_REMINDERS.value, "outcome": outcome}
        assert app.registry.get_sample_value(runs_total, labels) == count
    failed_messages = {"channel": "whatsapp", "kind": "booking_reminder", "outcome": "failed"}
    assert app.registry.get_sample_value("flavor_scheduler_messages_total", failed_messages) == 1
    [error] = result.errors
    assert booking["booking_reference"] in error
    assert "whatsapp" in error
    assert "12345" not in error
    assert len(whatsapp.sent) == 1  # the performer's
    assert len(email.sent) == 2
    failed = await fetch(engine, "SELECT status, last_error FROM flavor_scheduler.deliveries WHERE status = 'failed'")
    assert len(failed) == 1


async def test_permanent_provider_failure_is_reported_not_retried(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport
) -> None:
    booking = await add_booking(engine, event_date=NOW + 5 * HOUR)
    client_phone = "+61412345" + booking["client"]["phone"][-3:]
    whatsapp.fail_to(client_phone, PermanentSendError("Twilio refused the number (21211)", code="21211"))
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert any("21211" in error and booking["booking_reference"] in error for error in result.errors)
    attempts_before = len(whatsapp.attempts)
    deliver = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert deliver.count == 0
    assert len(whatsapp.attempts) == attempts_before


async def test_transient_failure_retried_in_run_then_delivered(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    await add_booking(engine, event_date=NOW + 5 * HOUR)
    email.fail_next(1)
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert result.success
    assert len(email.sent) == 2
    assert len(email.attempts) == 3
    assert any(0 < pause <= 1.0 for pause in clock.slept)


async def test_persistent_transient_failure_left_pending_for_a_later_run(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    await add_booking(engine, event_date=NOW + 5 * HOUR)
    email.fail_next(6)
    first = await run(app, JobName.SEND_BOOKING_REMINDERS)
    # Left for a later run, not lost; the run did its work but says so: partial, an error per message.
    assert first.outcome is RunOutcome.PARTIAL and not first.fatal
    assert first.messages == {MessageState.SENT: 2, MessageState.RETRYING: 2}
    assert len(first.errors) == 2
    assert all("email to" in error and "retrying at 2026-11-29T" in error for error in first.errors)
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE status = 'pending'") == 2
    nothing_due = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert nothing_due.count == 0
    clock.advance(3600)
    later = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert later.count == 2 and later.success
    assert later.messages == {MessageState.SENT: 2}
    assert len(email.sent) == 2
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE status = 'sent'") == 4


async def test_channel_off_records_skipped(
    settings: Any, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    from scheduler.app import build

    app = build(settings, clock=clock, transports={Channel.EMAIL: email})
    await app.prepare_database()
    try:
        await add_booking(engine, event_date=NOW + 5 * HOUR)
        result = await run(app, JobName.SEND_BOOKING_REMINDERS)
        assert result.success
        assert len(email.sent) == 2
        skipped = await fetch(engine, "SELECT channel FROM flavor_scheduler.deliveries WHERE status = 'skipped'")
        assert [row.channel for row in skipped] == ["whatsapp", "whatsapp"]
        skipped = app.registry.get_sample_value(
            "flavor_scheduler_messages_total",
            {"channel": "whatsapp", "kind": "booking_reminder", "outcome": "skipped"},
        )
        assert skipped == 2
    finally:
        await app.aclose()


async def test_missing_client_row_fails_that_booking_alone(
    app: App, engine: AsyncEngine, email: RecordingTransport
) -> None:
    orphan = await add_booking(engine, client={"id": uuid4()}, event_date=NOW + 5 * HOUR)
    fine = await add_booking(engine, event_date=NOW + 6 * HOUR)
    result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert any(orphan["booking_reference"] in error and "client" in error for error in result.errors)
    assert fine["booking_reference"] in {m.booking_reference for m in email.sent}
    assert orphan["performer"]["email"] in {m.to for m in email.sent}  # the performer is still told


async def test_payment_reminder_rules(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    due = await add_booking(engine, event_date=NOW + 2 * 24 * HOUR)
    await add_booking(engine, event_date=NOW + 3 * 24 * HOUR + timedelta(minutes=5))  # beyond 3 days
    await add_booking(engine, event_date=NOW + 2 * 24 * HOUR, payment_status="paid")
    await add_booking(engine, event_date=NOW + 2 * 24 * HOUR, deposit_amount=Decimal("1250.00"))  # no balance
    await add_booking(engine, event_date=NOW + 2 * 24 * HOUR, status="pending")
    await add_booking(engine, event_date=NOW + timedelta(minutes=30))  # too close

    result = await run(app, JobName.SEND_PAYMENT_REMINDERS)

    assert result.success, result.errors
    assert result.count == 1
    assert [m.to for m in email.sent] == [due["client"]["email"]]  # the client only
    assert "$1,000.00" in email.sent[0].text
    again = await run(app, JobName.SEND_PAYMENT_REMINDERS)
    assert again.count == 0


async def test_preferences_are_honoured(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    no_email = await add_booking(engine, event_date=NOW + 5 * HOUR)
    await set_preferences(engine, no_email["client"]["user_id"], email_notifications=False)
    no_whatsapp = await add_booking(engine, event_date=NOW + 5 * HOUR)
    await set_preferences(engine, no_whatsapp["performer"]["user_id"], sms_notifications=False)
    no_payment = await add_booking(engine, event_date=NOW + 30 * HOUR)
    await set_preferences(engine, no_payment["client"]["user_id"], payment_reminders=False)

    await run(app, JobName.SEND_BOOKING_REMINDERS)
    payment = await run(app, JobName.SEND_PAYMENT_REMINDERS)

    assert no_email["client"]["email"] not in {m.to for m in email.sent}
    assert no_email["performer"]["email"] in {m.to for m in email.sent}
    assert not [
        m
        for m in whatsapp.sent
        if m.booking_reference == no_whatsapp["booking_reference"]
        and m.kind == "booking_reminder"
        and m.to.endswith(no_whatsapp["performer"]["phone"][-3:])
    ]
    assert no_payment["booking_reference"] not in {
        m.booking_reference for m in [*email.sent, *whatsapp.sent] if m.kind == "payment_reminder"
    }
    assert payment.success
    in_app_payment = await fetch(
        engine,
        "SELECT user_id FROM notifications WHERE type = 'payment_reminder' AND booking_id = :id",
        id=no_payment["id"],
    )
    assert in_app_payment == []  # "stops payment reminders on every channel", in-app included


async def test_three_concurrent_runs_send_each_message_once(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    for n in range(200):
        await add_booking(engine, event_date=NOW + 2 * HOUR + timedelta(minutes=n))
    results = await asyncio.gather(*(send_booking_reminders(JobContext(app.deps), NOW) for _ in range(3)))

    assert sum(r.count for r in results) == 200
    assert len(whatsapp.sent) == 400
    assert len({m.delivery_id for m in whatsapp.sent}) == 400
    assert len(email.sent) == 400
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 400
    assert await scalar(engine, "SELECT count(*) FROM audit_logs") == 200


# --- A -> B -> A: the reminder owed is the one for the current event_date, unless the latest
# reminder sent was for that same date (CONTRACT §2) ------------------------------------------------

TWO_PM = NOW + 20 * HOUR  # Monday 30 November 2026, 2:00 pm in Perth
FOUR_PM = NOW + 22 * HOUR  # 4:00 pm


async def move(engine: AsyncEngine, booking: dict[str, Any], event_date: Any) -> None:
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE bookings SET event_date = :d, updated_at = :d WHERE id = ANY(:ids)"),
            {"d": event_date, "ids": [booking["id"]]},
        )


def to_client(sent: list[Any], booking: dict[str, Any]) -> list[Any]:
    return [m for m in sent if m.to == booking["client"]["email"]]


@pytest.mark.parametrize("hours_between_runs", [1, 0], ids=["hourly", "same-instant"])
async def test_moved_a_b_a_is_reminded_for_a_again_once(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport, hours_between_runs: int
) -> None:
    booking = await add_booking(engine, event_date=TWO_PM)
    assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 1
    await move(engine, booking, FOUR_PM)
    clock.advance(3600 * hours_between_runs)
    assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 1
    await move(engine, booking, TWO_PM)
    clock.advance(3600 * hours_between_runs)

    back = await run(app, JobName.SEND_BOOKING_REMINDERS)
    again = await run(app, JobName.SEND_BOOKING_REMINDERS)

    assert back.success, back.errors
    assert (back.count, again.count) == (1, 0)
    told = to_client(email.sent, booking)
    assert ["2:00 pm" in m.text for m in told] == [True, False, True]
    assert "4:00 pm" in told[1].text
    assert len(email.sent) == 6  # client and performer, three times
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 6
    assert await scalar(engine, "SELECT count(*) FROM audit_logs WHERE action = 'reminder_sent'") == 3
    assert await scalar(engine, "SELECT count(DISTINCT dedupe_key) FROM flavor_scheduler.deliveries") == 12


async def test_moved_a_b_is_reminded_for_b(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    booking = await add_booking(engine, event_date=TWO_PM)
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    await move(engine, booking, FOUR_PM)
    moved = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert moved.count == 1
    assert "4:00 pm" in to_client(email.sent, booking)[-1].text
    assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 0


async def test_moved_a_a_is_never_reminded_twice(app: App, engine: AsyncEngine, email: RecordingTransport) -> None:
    booking = await add_booking(engine, event_date=TWO_PM)
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    await move(engine, booking, TWO_PM)  # saved again, same time
    assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 0
    assert len(email.sent) == 2


async def test_moved_a_b_a_b_a_each_return_reminded_once(
    app: App, clock: FrozenClock, engine: AsyncEngine, email: RecordingTransport
) -> None:
    booking = await add_booking(engine, event_date=TWO_PM)
    for when in (TWO_PM, FOUR_PM, TWO_PM, FOUR_PM, TWO_PM):
        await move(engine, booking, when)
        assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 1
        assert (await run(app, JobName.SEND_BOOKING_REMINDERS)).count == 0
        clock.advance(600)
    told = to_client(email.sent, booking)
    assert ["2:00 pm" in m.text for m in told] == [True, False, True, False, True]


async def test_three_concurrent_runs_remind_a_b_a_bookings_once_more(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport
) -> None:
    from sqlalchemy import text

    made = [await add_booking(engine, event_date=TWO_PM + timedelta(minutes=n)) for n in range(60)]
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE bookings SET event_date = event_date + interval '2 hours'"))
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE bookings SET event_date = event_date - interval '2 hours'"))
    before = len(whatsapp.sent)

    results = await asyncio.gather(*(send_booking_reminders(JobContext(app.deps), NOW) for _ in range(3)))

    assert sum(r.count for r in results) == len(made)
    again = whatsapp.sent[before:]
    assert len(again) == 2 * len(made)
    assert len({m.delivery_id for m in again}) == len(again)
    assert len({(m.booking_reference, m.to) for m in again}) == len(again)
    assert await scalar(engine, "SELECT count(*) FROM audit_logs") == 3 * len(made)


async def test_the_first_batch_is_sent_while_the_next_one_is_still_being_recorded(
    settings: Settings, clock: FrozenClock, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    """Three due bookings in batches of two: the second batch's recording waits on a lock this test
    holds, and the first batch's eight messages go out meanwhile; then all twelve, each once."""
    for _ in range(3):
        await add_booking(engine, event_date=NOW + 23 * HOUR)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION second_batch_waits() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF (SELECT count(*) FROM flavor_scheduler.booking_reminders) > 2 THEN "
                "PERFORM pg_advisory_xact_lock(4242); END IF; RETURN NULL; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER second_batch_waits BEFORE INSERT ON audit_logs "
                "FOR EACH STATEMENT EXECUTE FUNCTION second_batch_waits()"
            )
        )
    batches_of_two = Limits(reminder_batch_size=2)
    async with (
        recording_app(settings, clock, whatsapp, email, limits=batches_of_two) as app,
        engine.connect() as holder,
    ):
        await holder.execute(text("SELECT pg_advisory_lock(4242)"))
        running = asyncio.create_task(run(app, JobName.SEND_BOOKING_REMINDERS))
        async with asyncio.timeout(10):
            await whatsapp.wait_for_attempts(4)
            await email.wait_for_attempts(4)
        assert not running.done()
        assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries") == 8  # batch 2 not yet
        await holder.execute(text("SELECT pg_advisory_unlock(4242)"))
        result = await running

    assert result.success, result.errors
    assert result.details["messagesSent"] == 12
    sent = [(m.delivery_id, m.to) for m in [*whatsapp.sent, *email.sent]]
    assert len(sent) == len(set(sent)) == 12
