"""Phone numbers Twilio reports opted out (21610), on the send or in a status callback, are
suppressed: later WhatsApp messages to them are `skipped` with reason `suppressed`, counted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from scheduler.addresses import address_hash
from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.notify.recording import RecordingTransport
from scheduler.notify.transport import PermanentSendError
from scheduler.settings import Settings
from scheduler.vocabulary import AddressKind, Channel, JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, fetch
from tests.fakes.fixtures import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER

CALLBACK_URL = "https://scheduler.example.com/api/twilio/status"
NUMBER = "+61412000111"


async def _app(database_url: str, clock: FrozenClock) -> App:
    settings = Settings(
        _env_file=None,
        database_url=to_libpq(database_url),
        http_host="127.0.0.1",
        http_port=0,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_status_callback_url=CALLBACK_URL,
    )
    transports = {channel: RecordingTransport(channel) for channel in (Channel.WHATSAPP, Channel.EMAIL)}
    app = build(settings, clock=clock, transports=transports)
    await app.prepare_database()
    return app


def _whatsapp(app: App) -> RecordingTransport:
    transport = app.transports[Channel.WHATSAPP]
    assert isinstance(transport, RecordingTransport)
    return transport


async def _remind(app: App, engine: AsyncEngine, client: dict[str, Any], hours: int) -> Any:
    await add_booking(engine, client=client, event_date=NOW + timedelta(hours=hours))
    return await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)


async def _client_whatsapp(engine: AsyncEngine) -> list[tuple[str, str | None]]:
    rows = await fetch(
        engine,
        "SELECT status, last_error FROM flavor_scheduler.deliveries "
        "WHERE channel = 'whatsapp' AND recipient_role = 'client' ORDER BY created_at, id",
    )
    return [(row.status, row.last_error) for row in rows]


async def test_21610_on_send_suppresses_the_number(database_url: str, clock: FrozenClock, engine: AsyncEngine) -> None:
    app = await _app(database_url, clock)
    try:
        client = await add_client(engine, phone="0412 000 111")
        _whatsapp(app).fail_to(NUMBER, PermanentSendError("opted out (Twilio error 21610)", code="21610"))
        first = await _remind(app, engine, client, hours=5)
        assert first.messages[MessageState.FAILED] == 1
        (row,) = await fetch(engine, "SELECT * FROM flavor_scheduler.suppressions")
        assert row.address_hash == address_hash(NUMBER, AddressKind.PHONE)
        assert (row.address_kind, row.reason, row.source, row.masked_address) == (
            "phone", "opted_out", "twilio_send", "+61 4** *** 111",
        )  # fmt: skip

        _whatsapp(app).clear_rules()
        clock.advance(3600)
        second = await _remind(app, engine, client, hours=7)
        assert second.success and second.messages[MessageState.SKIPPED] == 1
        assert (await _client_whatsapp(engine))[-1] == ("skipped", "suppressed")
        assert NUMBER not in [sent.message.to for sent in _whatsapp(app).accepted]
        labels = {"channel": "whatsapp", "kind": "booking_reminder", "outcome": "skipped"}
        assert app.registry.get_sample_value("flavor_scheduler_messages_total", labels) == 1
    finally:
        await app.aclose()


async def test_21610_in_a_status_callback_suppresses_the_number(
    database_url: str, clock: FrozenClock, engine: AsyncEngine
) -> None:
    app = await _app(database_url, clock)
    port = await app.http.start()
    try:
        client = await add_client(engine, phone=NUMBER)
        await _remind(app, engine, client, hours=5)
        sid = next(sent.provider_id for sent in _whatsapp(app).accepted if sent.message.to == NUMBER)
        form = {"AccountSid": TWILIO_ACCOUNT_SID, "MessageSid": sid, "MessageStatus": "undelivered",
                "ErrorCode": "21610", "To": f"whatsapp:{NUMBER}"}  # fmt: skip
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, form)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/api/twilio/status", data=form, headers={"X-Twilio-Signature": signature}
            ) as response,
        ):
            assert response.status == 204
        (row,) = await fetch(engine, "SELECT source, provider_message_id FROM flavor_scheduler.suppressions")
        assert tuple(row) == ("twilio_callback", sid)

        second = await _remind(app, engine, client, hours=7)
        assert second.messages[MessageState.SKIPPED] == 1
        assert (await _client_whatsapp(engine))[-1] == ("skipped", "suppressed")
    finally:
        await app.http.stop()
        await app.aclose()
