"""Quiet hours (CONTRACT §2): WhatsApp and email that become sendable at night are held until the
morning, an absolute instant right across daylight-saving changes, and sent then, re-checked and
written afresh; a message whose event would by then be too close goes at once; in-app notices
never wait; holding is not an error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.jobs.report import result_json
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, MessageState, Trigger
from tests.database import to_libpq
from tests.factories import add_booking, fetch, scalar

SYDNEY = ZoneInfo("Australia/Sydney")
PERTH = ZoneInfo("Australia/Perth")


def sydney(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SYDNEY)  # type: ignore[misc]


@pytest.fixture
def where() -> ZoneInfo:
    return SYDNEY


@pytest.fixture
async def night_app(
    database_url: str, where: ZoneInfo, whatsapp: RecordingTransport, email: RecordingTransport
) -> AsyncIterator[tuple[App, FrozenClock]]:
    """The app with the default QUIET_HOURS (21:00-08:00) in `where`, its clock set per test."""
    settings = Settings(_env_file=None, database_url=to_libpq(database_url), http_port=0, timezone=where.key)
    assert settings.quiet_hours == "21:00-08:00"
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email})
    await app.prepare_database()
    try:
        yield app, clock
    finally:
        await app.aclose()


async def run(app: App, job: JobName) -> Any:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


def texts(*transports: RecordingTransport) -> list[str]:
    return [sent.message.text for transport in transports for sent in transport.accepted]


@pytest.mark.parametrize(
    ("evening", "morning", "night_hours"),
    [
        (sydney(2026, 11, 29, 22, 0), sydney(2026, 11, 30, 8, 0), 10),  # a plain night (AEDT)
        (sydney(2026, 10, 3, 22, 0), sydney(2026, 10, 4, 8, 0), 9),  # clocks go forward at 02:00
        (sydney(2026, 4, 4, 22, 0), sydney(2026, 4, 5, 8, 0), 11),  # clocks go back at 03:00
    ],
)
async def test_a_reminder_due_at_night_is_held_until_eight_and_then_sent_true(
    night_app: tuple[App, FrozenClock],
    engine: AsyncEngine,
    whatsapp: RecordingTransport,
    email: RecordingTransport,
    evening: datetime,
    morning: datetime,
    night_hours: int,
) -> None:
    app, clock = night_app
    clock.set(evening)
    event = evening + timedelta(hours=22)  # 20:00 the next day, local, whatever the night's length
    booking = await add_booking(engine, event_date=event)

    first = await run(app, JobName.SEND_BOOKING_REMINDERS)

    assert first.success and first.errors == []  # holding is not an error
    assert first.messages[MessageState.HELD] == 4 and first.messages[MessageState.SENT] == 0
    assert result_json(first)["messages"]["held"] == 4
    assert first.count == 1  # the in-app notices were not held
    assert await scalar(engine, "SELECT count(*) FROM notifications WHERE type = 'booking_reminder'") == 2
    assert not whatsapp.attempts and not email.attempts
    rows = await fetch(engine, "SELECT status, next_attempt_at, attempts, last_error FROM flavor_scheduler.deliveries")
    assert {(row.status, row.next_attempt_at, row.attempts) for row in rows} == {("held", morning.astimezone(UTC), 0)}
    assert morning.astimezone(UTC) - evening.astimezone(UTC) == timedelta(hours=night_hours)
    assert all("quiet hours" in row.last_error for row in rows)
    held = {"channel": "whatsapp", "kind": "booking_reminder", "outcome": "held"}
    assert app.registry.get_sample_value("flavor_scheduler_messages_total", held) == 2
    # Waiting for the morning is not a backlog (FlavorSchedulerBacklogGrowing would page all night).
    assert app.registry.get_sample_value("flavor_scheduler_messages_pending", {"channel": "whatsapp"}) == 0

    clock.set(morning - timedelta(seconds=1))
    assert (await run(app, JobName.DELIVER_PENDING_MESSAGES)).messages[MessageState.SENT] == 0
    clock.set(morning)
    later = await run(app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.success and later.messages[MessageState.SENT] == 4 and later.count == 4
    statuses = await fetch(engine, "SELECT status, attempts FROM flavor_scheduler.deliveries")
    assert {(row.status, row.attempts) for row in statuses} == {("sent", 1)}
    # Written afresh when sent: 12 hours to go at 08:00, not the 22 of the evening.
    assert all("in 12 hours" in body and "22 hours" not in body for body in texts(whatsapp, email))
    assert all(booking["booking_reference"] in body for body in texts(whatsapp, email))


async def test_a_reminder_whose_event_would_be_too_close_by_morning_goes_at_once(
    night_app: tuple[App, FrozenClock], engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    app, clock = night_app
    clock.set(sydney(2026, 11, 29, 23, 0))
    await add_booking(engine, event_date=sydney(2026, 11, 30, 8, 45))  # 45 minutes after the quiet hours
    far = await add_booking(engine, event_date=sydney(2026, 11, 30, 10, 0))

    result = await run(app, JobName.SEND_BOOKING_REMINDERS)

    assert result.messages[MessageState.SENT] == 4 and result.messages[MessageState.HELD] == 4
    held = await fetch(engine, "SELECT DISTINCT booking_id FROM flavor_scheduler.deliveries WHERE status = 'held'")
    assert [row.booking_id for row in held] == [far["id"]]
    assert len(whatsapp.accepted) == len(email.accepted) == 2


async def test_a_message_held_overnight_is_void_if_the_booking_is_cancelled_by_morning(
    night_app: tuple[App, FrozenClock], engine: AsyncEngine, whatsapp: RecordingTransport
) -> None:
    app, clock = night_app
    clock.set(sydney(2026, 11, 29, 21, 0))
    booking = await add_booking(engine, event_date=sydney(2026, 11, 30, 18, 0))
    await run(app, JobName.SEND_BOOKING_REMINDERS)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE bookings SET status = 'cancelled' WHERE id = :id"), {"id": booking["id"]})

    clock.set(sydney(2026, 11, 30, 8, 5))
    later = await run(app, JobName.DELIVER_PENDING_MESSAGES)

    assert later.success and later.messages[MessageState.VOID] == 4
    assert not whatsapp.attempts


async def test_a_retry_that_falls_due_at_night_is_held(
    night_app: tuple[App, FrozenClock], engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    app, clock = night_app
    clock.set(sydney(2026, 11, 29, 20, 55))
    await add_booking(engine, event_date=sydney(2026, 11, 30, 19, 0))
    whatsapp.fail_next(100)  # Twilio is down for a while
    first = await run(app, JobName.SEND_BOOKING_REMINDERS)
    assert first.messages[MessageState.RETRYING] == 2 and first.messages[MessageState.SENT] == 2
    whatsapp.recover()
    tried = len(whatsapp.attempts)

    clock.set(sydney(2026, 11, 29, 21, 30))  # their backoff has passed, at night
    night = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert night.success and night.messages[MessageState.HELD] == 2
    assert len(whatsapp.attempts) == tried
    clock.set(sydney(2026, 11, 30, 8, 0))
    morning = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert morning.messages[MessageState.SENT] == 2
    assert len(whatsapp.accepted) == 2 and len(email.accepted) == 2


@pytest.mark.parametrize("where", [PERTH])
async def test_the_two_am_cancellation_notices_go_out_at_eight(
    night_app: tuple[App, FrozenClock], engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    app, clock = night_app
    two_am = datetime(2026, 11, 30, 2, 0, tzinfo=PERTH)
    clock.set(two_am)
    await add_booking(
        engine, status="pending", payment_status="pending", created_at=two_am - timedelta(days=2),
        event_date=two_am + timedelta(days=12),
    )  # fmt: skip

    night = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    assert night.success and night.count == 1 and night.messages[MessageState.HELD] == 4
    assert await scalar(engine, "SELECT count(*) FROM notifications WHERE type = 'booking_cancelled'") == 2
    assert not whatsapp.attempts and not email.attempts
    clock.set(datetime(2026, 11, 30, 8, 0, tzinfo=PERTH))
    morning = await run(app, JobName.DELIVER_PENDING_MESSAGES)
    assert morning.messages[MessageState.SENT] == 4
    assert len(whatsapp.accepted) == len(email.accepted) == 2


async def test_quiet_hours_off_sends_at_any_hour(
    database_url: str, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    settings = Settings(_env_file=None, database_url=to_libpq(database_url), http_port=0, quiet_hours="off")
    clock = FrozenClock(datetime(2026, 11, 30, 3, 0, tzinfo=PERTH))
    app = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email})
    await app.prepare_database()
    try:
        await add_booking(engine, event_date=clock.now() + timedelta(hours=10))
        result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    finally:
        await app.aclose()
    assert result.messages[MessageState.SENT] == 4 and result.messages[MessageState.HELD] == 0
