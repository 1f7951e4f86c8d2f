"""SMS fallback (TWILIO_SMS_FROM, CONTRACT §2): a WhatsApp message Twilio refuses with 63016 or
63003, or reports `undelivered`/`failed` in a signed status callback, is sent once as an SMS with
the same text, as its own delivery; never for an invalid number, never without the setting, never
twice across reruns, replayed callbacks and replicas. Real twilio SDK against the stand-in server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.vocabulary import JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.factories import add_booking, add_client, fetch
from tests.fakes.fixtures import TWILIO_AUTH_TOKEN
from tests.fakes.providers import FakeResend, FakeTwilio
from tests.integration.test_delivery_providers import provider_settings_for

SMS_FROM = "+61480000000"
CALLBACK_URL = "https://scheduler.example.com/api/twilio/status"  # the public URL Twilio signs for
CLIENT = "+61412000222"


def _app(database_url: str, twilio: FakeTwilio, resend: FakeResend, clock: FrozenClock, **extra: Any) -> App:
    return build(provider_settings_for(database_url, twilio, resend, http_host="127.0.0.1", http_port=0, **extra),
                 clock=clock)  # fmt: skip


@pytest.fixture
async def fallback_app(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock
) -> AsyncIterator[App]:
    app = _app(database_url, twilio_server, resend_server, clock, twilio_sms_from=SMS_FROM)
    await app.prepare_database()
    try:
        yield app
    finally:
        await app.aclose()


async def _booking(engine: AsyncEngine) -> dict[str, Any]:
    client = await add_client(engine, phone="0412 000 222")
    return await add_booking(engine, client=client, event_date=NOW + timedelta(hours=5))


def _sms(twilio: FakeTwilio) -> list[Any]:
    return [m for m in twilio.accepted if not m.to.startswith("whatsapp:")]


def _whatsapp_body(twilio: FakeTwilio, to: str) -> str:
    (request,) = [r for r in twilio.requests_to("send") if r.form and r.form["To"] == f"whatsapp:{to}"]
    assert request.form is not None
    return request.form["Body"]


async def _run(app: App, job: JobName) -> Any:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


@pytest.mark.parametrize("code", [63016, 63003])
async def test_a_whatsapp_refusal_is_sent_once_as_an_sms(
    fallback_app: App, engine: AsyncEngine, twilio_server: FakeTwilio, code: int
) -> None:
    await _booking(engine)
    twilio_server.refuse_whatsapp[CLIENT] = code

    result = await _run(fallback_app, JobName.SEND_BOOKING_REMINDERS)

    (sms,) = _sms(twilio_server)
    assert (sms.to, sms.from_) == (CLIENT, SMS_FROM)  # no whatsapp: prefix on either side
    assert sms.body == _whatsapp_body(twilio_server, CLIENT)  # the same text
    assert result.messages[MessageState.FAILED] == 1  # the WhatsApp message itself did fail
    assert any(f"Twilio error {code}" in e and e.endswith("sent as an SMS instead") for e in result.errors)
    rows = await fetch(
        engine,
        "SELECT w.status AS whatsapp, s.status AS sms, s.provider_message_id, s.body_text = w.body_text AS same "
        "FROM flavor_scheduler.deliveries w JOIN flavor_scheduler.deliveries s "
        "ON s.dedupe_key = 'sms_fallback:' || w.id WHERE w.channel = 'whatsapp' AND w.address = :to",
        to=CLIENT,
    )
    assert [(r.whatsapp, r.sms, r.provider_message_id, r.same) for r in rows] == [("failed", "sent", sms.sid, True)]
    labels = {"channel": "sms", "kind": "booking_reminder", "outcome": "sent"}
    assert fallback_app.registry.get_sample_value("flavor_scheduler_messages_total", labels) == 1

    # Reruns owe and send nothing more.
    await _run(fallback_app, JobName.SEND_BOOKING_REMINDERS)
    await _run(fallback_app, JobName.DELIVER_PENDING_MESSAGES)
    assert len(_sms(twilio_server)) == 1


async def test_an_invalid_number_gets_no_sms(fallback_app: App, engine: AsyncEngine, twilio_server: FakeTwilio) -> None:
    await _booking(engine)
    twilio_server.refuse_whatsapp[CLIENT] = 21211  # the number itself is wrong: an SMS would fail too
    result = await _run(fallback_app, JobName.SEND_BOOKING_REMINDERS)
    assert result.messages[MessageState.FAILED] == 1
    assert _sms(twilio_server) == []
    assert await fetch(engine, "SELECT id FROM flavor_scheduler.deliveries WHERE channel = 'sms'") == []


async def test_without_the_setting_nothing_changes(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock, engine: AsyncEngine
) -> None:
    app = _app(database_url, twilio_server, resend_server, clock)
    await app.prepare_database()
    try:
        await _booking(engine)
        twilio_server.refuse_whatsapp[CLIENT] = 63016
        result = await _run(app, JobName.SEND_BOOKING_REMINDERS)
        assert result.messages[MessageState.FAILED] == 1
        assert not any("SMS" in error for error in result.errors)
        assert _sms(twilio_server) == []
        assert await fetch(engine, "SELECT id FROM flavor_scheduler.deliveries WHERE channel = 'sms'") == []
    finally:
        await app.aclose()


async def test_a_messaging_service_sends_the_sms(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock, engine: AsyncEngine
) -> None:
    service = "MG" + "0123456789abcdef" * 2
    twilio_server.sms_senders = {service}
    app = _app(database_url, twilio_server, resend_server, clock, twilio_sms_from=service)
    await app.prepare_database()
    try:
        await _booking(engine)
        twilio_server.refuse_whatsapp[CLIENT] = 63003
        await _run(app, JobName.SEND_BOOKING_REMINDERS)
        (request,) = [r for r in twilio_server.requests_to("send") if r.form and r.form["To"] == CLIENT]
        assert request.form is not None
        assert request.form["MessagingServiceSid"] == service and "From" not in request.form
    finally:
        await app.aclose()


async def _undelivered_callback(app: App, engine: AsyncEngine, twilio: FakeTwilio) -> dict[str, Any]:
    """A reminder whose WhatsApp message Twilio accepts and then reports undelivered."""
    port = await app.http.start()
    twilio.callback_target = f"http://127.0.0.1:{port}/api/twilio/status"
    twilio.undeliver_whatsapp[CLIENT] = "63032"  # "user's number is part of an experiment"
    booking = await _booking(engine)
    result = await _run(app, JobName.SEND_BOOKING_REMINDERS)
    assert result.success, result.errors  # accepted: the run knows nothing yet
    await twilio.callbacks_sent()
    ((form, answered),) = twilio.callbacks
    assert answered == 204
    return {"booking": booking, "form": form}


async def test_an_undelivered_callback_is_sent_once_as_an_sms_across_replays_reruns_and_replicas(
    database_url: str,
    twilio_server: FakeTwilio,
    resend_server: FakeResend,
    clock: FrozenClock,
    engine: AsyncEngine,
) -> None:
    settings = {"twilio_sms_from": SMS_FROM, "twilio_status_callback_url": CALLBACK_URL}
    replicas = [_app(database_url, twilio_server, resend_server, clock, **settings) for _ in range(2)]
    for app in replicas:
        await app.prepare_database()
    try:
        sent = await _undelivered_callback(replicas[0], engine, twilio_server)
        assert _sms(twilio_server) == []  # owed now; the next delivery run sends it
        # Twilio retries callbacks: the same report again owes nothing more.
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, sent["form"])
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                twilio_server.callback_target or "", data=sent["form"], headers={"X-Twilio-Signature": signature}
            ) as response,  # fmt: skip
        ):
            assert response.status == 204
        owed = await fetch(engine, "SELECT status FROM flavor_scheduler.deliveries WHERE channel = 'sms'")
        assert [row.status for row in owed] == ["pending"]

        # Two replicas deliver at once: one SMS.
        results = await asyncio.gather(*(_run(app, JobName.DELIVER_PENDING_MESSAGES) for app in replicas))
        assert sum(result.messages[MessageState.SENT] for result in results) == 1
        (sms,) = _sms(twilio_server)
        assert sms.to == CLIENT and sms.body == _whatsapp_body(twilio_server, CLIENT)
        for app in replicas:
            await _run(app, JobName.DELIVER_PENDING_MESSAGES)
            await _run(app, JobName.SEND_BOOKING_REMINDERS)
        assert len(_sms(twilio_server)) == 1
    finally:
        await replicas[0].http.stop()
        for app in replicas:
            await app.aclose()


async def test_the_sms_is_checked_when_it_leaves(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend, clock: FrozenClock, engine: AsyncEngine
) -> None:
    app = _app(database_url, twilio_server, resend_server, clock, twilio_sms_from=SMS_FROM,
               twilio_status_callback_url=CALLBACK_URL)  # fmt: skip
    await app.prepare_database()
    try:
        sent = await _undelivered_callback(app, engine, twilio_server)
        async with engine.begin() as conn:  # cancelled before the SMS went
            await conn.execute(text("UPDATE bookings SET status = 'cancelled' WHERE id = :id"),
                               {"id": sent["booking"]["id"]})  # fmt: skip
        result = await _run(app, JobName.DELIVER_PENDING_MESSAGES)
        assert result.messages[MessageState.VOID] >= 1
        assert _sms(twilio_server) == []
        (row,) = await fetch(engine, "SELECT status FROM flavor_scheduler.deliveries WHERE channel = 'sms'")
        assert row.status == "void"
    finally:
        await app.http.stop()
        await app.aclose()
