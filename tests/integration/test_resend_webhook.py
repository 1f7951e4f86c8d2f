"""Resend's webhook (CONTRACT §6) at POST /api/resend/webhook: Svix-signed events (valid, forged,
stale, replayed) recorded on the delivery matched by Resend's email id, counted, and bounced or
complained addresses suppressed, so a later message to them is skipped with reason `suppressed`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.addresses import address_hash
from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings
from scheduler.vocabulary import AddressKind, Channel, JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, fetch

SECRET_BYTES = b"resend-webhook-signing-key-for-tests"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()


def signed(
    event: dict[str, Any], *, key: bytes = SECRET_BYTES, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an event as Svix sends it: `v1,` HMAC-SHA256 of `id.timestamp.body`."""
    body = json.dumps(event).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(at if at is not None else time.time()))  # Svix stamps the real time
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "svix-id": message_id,
        "svix-timestamp": timestamp,
        "svix-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }
    return body, headers


def event(kind: str, email_id: str, to: str, **data: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "created_at": "2026-11-29T10:00:00.000Z",
        "data": {"email_id": email_id, "from": "bookings@flavorentertainers.com.au", "to": [to], **data},
    }


async def _served(database_url: str, clock: FrozenClock, **settings: Any) -> tuple[App, str]:
    app = build(
        Settings(_env_file=None, database_url=to_libpq(database_url), http_host="127.0.0.1", http_port=0, **settings),
        clock=clock,
        transports={channel: RecordingTransport(channel) for channel in (Channel.WHATSAPP, Channel.EMAIL)},
    )
    await app.prepare_database()
    port = await app.http.start()
    return app, f"http://127.0.0.1:{port}/api/resend/webhook"


@pytest.fixture
async def served(database_url: str, clock: FrozenClock) -> AsyncIterator[tuple[App, str]]:
    app, url = await _served(database_url, clock, resend_webhook_secret=SECRET)
    try:
        yield app, url
    finally:
        await app.http.stop()
        await app.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status


def _counted(app: App, status: str) -> float:
    labels = {"channel": "email", "status": status}
    return app.registry.get_sample_value("flavor_scheduler_message_status_total", labels) or 0


async def _reminded(app: App, engine: AsyncEngine, client: dict[str, Any], hours: int = 5) -> Any:
    await add_booking(engine, client=client, event_date=NOW + timedelta(hours=hours))
    return await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)


async def test_without_the_secret_the_webhook_is_not_there(
    database_url: str, clock: FrozenClock, http: aiohttp.ClientSession
) -> None:
    app, url = await _served(database_url, clock)
    try:
        assert await _post(http, url, *signed(event("email.delivered", "e-1", "a@example.com"))) == 404
    finally:
        await app.http.stop()
        await app.aclose()


async def test_a_genuine_event_is_recorded_once_however_often_it_comes(
    served: tuple[App, str], engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    app, url = served
    client = await add_client(engine, email="ava@example.com")
    await _reminded(app, engine, client)
    email = app.transports[Channel.EMAIL]
    assert isinstance(email, RecordingTransport)
    email_id = next(sent.provider_id for sent in email.accepted if sent.message.to == "ava@example.com")

    delivered = signed(event("email.delivered", email_id, "ava@example.com"))
    assert await _post(http, url, *delivered) == 204
    assert await _post(http, url, *delivered) == 204  # Svix retries: a replay is still genuine
    assert await _post(http, url, *signed(event("email.delivery_delayed", email_id, "ava@example.com"))) == 204

    rows = await fetch(
        engine, "SELECT provider_status FROM flavor_scheduler.deliveries WHERE provider_message_id = :id", id=email_id
    )
    assert [row.provider_status for row in rows] == ["delivered"]  # a late "delayed" does not move it back
    assert _counted(app, "delivered") == 1
    assert _counted(app, "delivery_delayed") == 0
    # An event Resend sends that the daemon does not record (opened, clicked) is acknowledged.
    assert await _post(http, url, *signed(event("email.opened", email_id, "ava@example.com"))) == 204


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda body, headers: (body, {**headers, "svix-signature": "v1," + base64.b64encode(b"x" * 32).decode()}),
            id="wrong-signature",
        ),
        pytest.param(lambda body, headers: signed(json.loads(body), key=b"another-key"), id="another-secret"),
        pytest.param(lambda body, headers: (body.replace(b"delivered", b"bounced"), headers), id="tampered-body"),
        pytest.param(lambda body, headers: (body, {"Content-Type": "application/json"}), id="unsigned"),
        pytest.param(lambda body, headers: (body, {**headers, "svix-signature": "garbage"}), id="malformed"),
        pytest.param(lambda body, headers: signed(json.loads(body), at=time.time() - 6 * 60), id="stale"),
        pytest.param(lambda body, headers: signed(json.loads(body), at=time.time() + 6 * 60), id="from-the-future"),
    ],
)
async def test_a_forged_or_stale_event_is_refused(
    served: tuple[App, str], engine: AsyncEngine, http: aiohttp.ClientSession, forge: Any
) -> None:
    app, url = served
    client = await add_client(engine, email="ava@example.com")
    await _reminded(app, engine, client)
    body, headers = forge(*signed(event("email.delivered", "email-1", "ava@example.com")))
    assert await _post(http, url, body, headers) == 403
    rows = await fetch(engine, "SELECT provider_status FROM flavor_scheduler.deliveries WHERE channel = 'email'")
    assert all(row.provider_status is None for row in rows)
    assert _counted(app, "delivered") == 0


async def test_a_bounced_address_is_suppressed_and_later_messages_skipped(
    served: tuple[App, str], engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    app, url = served
    client = await add_client(engine, email="Ava.Bounce@Example.com")
    await _reminded(app, engine, client)
    email = app.transports[Channel.EMAIL]
    assert isinstance(email, RecordingTransport)
    email_id = next(sent.provider_id for sent in email.accepted if sent.message.to == "Ava.Bounce@Example.com")
    # Resend writes the address as it was sent; the daemon matches it whatever its case.
    bounced = event("email.bounced", email_id, "ava.bounce@example.com", bounce={"type": "Permanent"})
    assert await _post(http, url, *signed(bounced)) == 204
    assert await _post(http, url, *signed(bounced)) == 204

    (row,) = await fetch(engine, "SELECT * FROM flavor_scheduler.suppressions")
    assert row.address_hash == address_hash("ava.bounce@example.com", AddressKind.EMAIL)
    assert (row.reason, row.source, row.detail, row.masked_address) == (
        "bounced",
        "resend_webhook",
        "Permanent",
        "a***@example.com",
    )
    assert "ava.bounce" not in " ".join(str(value) for value in row).lower()  # the address itself is not kept
    assert _counted(app, "bounced") == 1

    sent_before = len(email.accepted)
    result = await _reminded(app, engine, client, hours=7)  # another booking of the same client
    assert result.success, result.errors
    later = [sent.message.to for sent in email.accepted[sent_before:]]
    assert len(later) == 1 and "Ava.Bounce@Example.com" not in later  # the performer's email only
    assert result.messages[MessageState.SKIPPED] == 1
    skipped = await fetch(
        engine, "SELECT recipient_role, last_error FROM flavor_scheduler.deliveries WHERE status = 'skipped'"
    )
    assert [(r.recipient_role, r.last_error) for r in skipped] == [("client", "suppressed")]
    labels = {"channel": "email", "kind": "booking_reminder", "outcome": "skipped"}
    assert app.registry.get_sample_value("flavor_scheduler_messages_total", labels) == 1
    whatsapp = app.transports[Channel.WHATSAPP]
    assert isinstance(whatsapp, RecordingTransport)
    assert len(whatsapp.accepted) == 4  # the phone is not suppressed: both bookings' WhatsApp went


async def test_a_complaint_suppresses_too_and_an_unknown_email_is_acknowledged(
    served: tuple[App, str], engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    app, url = served
    assert await _post(http, url, *signed(event("email.complained", "not-ours", "spam@example.com"))) == 204
    (row,) = await fetch(engine, "SELECT reason FROM flavor_scheduler.suppressions")
    assert row.reason == "complained"
    client = await add_client(engine, email="spam@example.com")
    result = await _reminded(app, engine, client)
    assert result.messages[MessageState.SKIPPED] == 1
