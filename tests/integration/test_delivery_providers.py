"""Reminders and notices end to end through the real twilio and resend SDKs, pointed at local
stand-in servers that answer like their APIs; assertions are on the requests they received."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, add_performer, scalar
from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeResend, FakeTwilio, Reply

HOUR = timedelta(hours=1)


def provider_settings_for(database_url: str, twilio: FakeTwilio, resend: FakeResend, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        database_url=to_libpq(database_url),
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_api_base_url=twilio.url,
        resend_api_key=RESEND_API_KEY,
        resend_api_url=resend.url,
        **{"quiet_hours": "off", **extra},
    )


@pytest.fixture
async def live_app(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock
) -> AsyncIterator[App]:
    app = build(provider_settings_for(database_url, twilio_server, resend_server), clock=clock)
    await app.prepare_database()
    try:
        yield app
    finally:
        await app.aclose()


async def run(app: App, job: JobName) -> Any:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


async def test_booking_reminder_reaches_both_providers(
    live_app: App, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    client = await add_client(engine, first_name="Ava", phone="0412 345 678", email="ava@example.com")
    performer = await add_performer(
        engine, stage_name="Velvet Storm", phone="+61 423 456 789", email="velvet@example.com"
    )
    booking = await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)

    result = await run(live_app, JobName.SEND_BOOKING_REMINDERS)

    assert result.success, result.errors
    sends = twilio_server.requests_to("send")
    assert {r.form["To"] for r in sends if r.form} == {"whatsapp:+61412345678", "whatsapp:+61423456789"}
    assert {r.form["From"] for r in sends if r.form} == {f"whatsapp:{TWILIO_WHATSAPP_NUMBER}"}
    for request in sends:
        assert request.form is not None
        body = request.form["Body"]
        assert booking["booking_reference"] in body
        assert "Velvet Storm" in body
        assert "Sunday 29 November 2026, 11:00 pm" in body  # 15:00Z in Perth (UTC+8)
        assert "in 5 hours" in body
    # Both emails in one request to /emails/batch (EMAIL_BATCH_SIZE defaults to 100).
    (request,) = resend_server.requests_to("batch")
    assert resend_server.requests_to("send") == []
    assert sorted(email["to"][0] for email in request.json) == ["ava@example.com", "velvet@example.com"]
    assert all(email["html"] and email["text"] for email in request.json)
    assert request.headers["Idempotency-Key"]


async def test_html_is_escaped_in_email_but_text_stays_plain(
    live_app: App, engine: AsyncEngine, resend_server: FakeResend
) -> None:
    performer = await add_performer(
        engine, stage_name="<script>alert(1)</script> & Co", email="p@example.com", phone=None
    )
    client = await add_client(engine, email="c@example.com", phone=None)
    await add_booking(
        engine, client=client, performer=performer, event_date=NOW + 5 * HOUR, venue_address="Bar <b>One</b>"
    )

    await run(live_app, JobName.SEND_BOOKING_REMINDERS)

    [first, *_] = [email.payload for email in resend_server.accepted]
    assert "<script>" not in first["html"]
    assert "&lt;script&gt;" in first["html"]
    assert "&amp; Co" in first["html"]
    assert "<script>alert(1)</script> & Co" in first["text"]


async def test_500_500_then_201_delivers_once(
    live_app: App, engine: AsyncEngine, twilio_server: FakeTwilio, clock: FrozenClock
) -> None:
    client = await add_client(engine, email=None)
    performer = await add_performer(engine, email=None, phone=None)
    await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)
    twilio_server.script(Reply.twilio_error(500, 20500, "boom"), Reply.twilio_error(500, 20500, "boom"))

    result = await run(live_app, JobName.SEND_BOOKING_REMINDERS)

    assert result.success, result.errors
    assert len(twilio_server.requests_to("send")) == 3
    assert len(twilio_server.accepted) == 1
    assert await scalar(engine, "SELECT status FROM flavor_scheduler.deliveries") == "sent"


async def test_429_retry_after_is_honoured(
    live_app: App, engine: AsyncEngine, resend_server: FakeResend, clock: FrozenClock
) -> None:
    client = await add_client(engine, phone=None)
    performer = await add_performer(engine, email=None, phone=None)
    await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)
    resend_server.script(Reply.resend_error(429, "rate_limit_exceeded", "slow down", {"Retry-After": "7"}))

    result = await run(live_app, JobName.SEND_BOOKING_REMINDERS)

    assert result.success, result.errors
    assert 7 in clock.slept
    keys = {r.headers["Idempotency-Key"] for r in resend_server.requests_to("send")}
    assert len(keys) == 1  # the same key across the retry: Resend sends it once
    assert len(resend_server.accepted) == 1


async def test_long_retry_after_leaves_the_message_pending_until_then(
    live_app: App, engine: AsyncEngine, resend_server: FakeResend, clock: FrozenClock
) -> None:
    client = await add_client(engine, phone=None)
    performer = await add_performer(engine, email=None, phone=None)
    await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)
    resend_server.script(Reply.resend_error(429, "rate_limit_exceeded", "slow down", {"Retry-After": "600"}))

    await run(live_app, JobName.SEND_BOOKING_REMINDERS)
    row = await _delivery(engine)
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == clock.now() + timedelta(seconds=600)

    clock.advance(600)
    later = await run(live_app, JobName.DELIVER_PENDING_MESSAGES)
    assert later.count == 1
    assert len(resend_server.accepted) == 1


async def _delivery(engine: AsyncEngine) -> dict[str, Any]:
    from tests.factories import fetch

    [row] = await fetch(engine, "SELECT status, next_attempt_at, attempts, last_error FROM flavor_scheduler.deliveries")
    return dict(row._mapping)


@pytest.mark.parametrize(
    ("channel", "reply"),
    [
        ("whatsapp", Reply.twilio_error(400, 21211, "The 'To' number is not a valid phone number.")),
        ("email", Reply.resend_error(422, "validation_error", "Invalid `to` field.")),
    ],
)
async def test_permanent_errors_are_not_retried(
    live_app: App, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend, channel: str, reply: Reply
) -> None:
    client = await add_client(engine)
    performer = await add_performer(engine, email=None, phone=None)
    booking = await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)
    server = twilio_server if channel == "whatsapp" else resend_server
    server.script(reply)

    result = await run(live_app, JobName.SEND_BOOKING_REMINDERS)
    again = await run(live_app, JobName.DELIVER_PENDING_MESSAGES)

    assert len(server.requests_to("send")) == 1
    [error] = result.errors
    assert booking["booking_reference"] in error and channel in error
    assert client["email"] not in error and "0412" not in error
    assert again.count == 0
    assert len(server.requests_to("send")) == 1


async def test_approved_templates_send_content_sid_and_variables(
    database_url: str, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock
) -> None:
    settings = provider_settings_for(
        database_url, twilio_server, resend_server, twilio_content_sid_booking_reminder="HX" + "1" * 32
    )
    app = build(settings, clock=clock)
    await app.prepare_database()
    try:
        client = await add_client(engine, first_name="Ava", email=None)
        performer = await add_performer(engine, email=None, phone=None, stage_name="Velvet Storm")
        booking = await add_booking(engine, client=client, performer=performer, event_date=NOW + 5 * HOUR)
        await run(app, JobName.SEND_BOOKING_REMINDERS)
    finally:
        await app.aclose()
    [request] = twilio_server.requests_to("send")
    assert request.form is not None
    assert request.form["ContentSid"] == "HX" + "1" * 32
    assert "Body" not in request.form
    variables = json.loads(request.form["ContentVariables"])
    assert variables["1"] == "Ava"
    assert variables["2"] == booking["booking_reference"]
    assert variables["3"] == "Velvet Storm"


@pytest.mark.parametrize(
    ("event", "shown"),
    [
        # The day before clocks fall back in Sydney (AEDT, UTC+11) and the day after (AEST, UTC+10).
        (datetime(2026, 4, 4, 9, 0, tzinfo=UTC), "Saturday 4 April 2026, 8:00 pm"),
        (datetime(2026, 4, 5, 9, 0, tzinfo=UTC), "Sunday 5 April 2026, 7:00 pm"),
        # Either side of spring-forward (4 October 2026).
        (datetime(2026, 10, 3, 9, 0, tzinfo=UTC), "Saturday 3 October 2026, 7:00 pm"),
        (datetime(2026, 10, 4, 9, 0, tzinfo=UTC), "Sunday 4 October 2026, 8:00 pm"),
    ],
)
async def test_message_time_in_a_daylight_saving_zone(
    database_url: str,
    engine: AsyncEngine,
    twilio_server: FakeTwilio,
    resend_server: FakeResend,
    event: datetime,
    shown: str,
) -> None:
    clock = FrozenClock(event - 6 * HOUR)
    app = build(
        provider_settings_for(database_url, twilio_server, resend_server, timezone="Australia/Sydney"), clock=clock
    )
    await app.prepare_database()
    try:
        client = await add_client(engine, email=None)
        performer = await add_performer(engine, email=None, phone=None)
        await add_booking(engine, client=client, performer=performer, event_date=event)
        result = await run(app, JobName.SEND_BOOKING_REMINDERS)
    finally:
        await app.aclose()
    assert result.success, result.errors
    [request] = twilio_server.requests_to("send")
    assert request.form is not None
    assert shown in request.form["Body"]
    assert "in 6 hours" in request.form["Body"]


async def test_cancellation_notices_go_out_in_the_same_run(
    live_app: App, engine: AsyncEngine, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    booking = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    result = await run(live_app, JobName.CLEANUP_STALE_BOOKINGS)
    assert result.success, result.errors
    assert len(twilio_server.accepted) == 2
    assert len(resend_server.accepted) == 2
    assert all(booking["booking_reference"] in r.form["Body"] for r in twilio_server.requests_to("send") if r.form)
