"""One `message_sent` line per message sent, naming the booking, kind, channel, recipient's role,
provider id and a masked address: what an operator greps for when a customer says "I never got
it", with no full phone number or email address in the log."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from scheduler.app import App
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.factories import add_booking


async def test_each_message_sent_has_its_line(
    app: App, engine: AsyncEngine, whatsapp: RecordingTransport, email: RecordingTransport
) -> None:
    booking = await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    with capture_logs() as logs:
        result = await app.runner.run(JobName.CLEANUP_STALE_BOOKINGS, trigger=Trigger.MANUAL)
    assert result.success, result.errors

    lines = [entry for entry in logs if entry["event"] == "message_sent"]
    provider_ids = {sent.provider_id for transport in (whatsapp, email) for sent in transport.accepted}
    assert len(lines) == len(provider_ids) == 4
    assert {entry["provider_id"] for entry in lines} == provider_ids
    assert {(entry["channel"], entry["role"]) for entry in lines} == {
        (channel, role) for channel in ("whatsapp", "email") for role in ("client", "performer")
    }
    for entry in lines:
        assert (entry["booking"], entry["kind"], entry["log_level"]) == (
            booking["booking_reference"], "booking_cancelled", "info",
        )  # fmt: skip
    addresses = [booking[side][field] for side in ("client", "performer") for field in ("phone", "email")]
    digits = [address.replace(" ", "")[-9:] for address in addresses if "@" not in address]
    for entry in lines:
        text = repr(entry)
        assert all(address not in text for address in addresses)
        assert all(number not in text for number in digits)
        assert "***" in entry["to"]  # masked, with its ends kept to be recognised
