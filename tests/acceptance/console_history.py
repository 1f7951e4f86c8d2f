"""A history with runs and messages in every state, made by the daemon's own jobs (recording
transports failing on cue), for the console's tests. Only what no job makes on its own within a
test (a message held by the quiet hours, one left `sending` by a replica that died, a run in
progress elsewhere, an errored run) is written into the tables directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db import outbox_provider_statuses
from scheduler.notify.recording import RecordingTransport
from scheduler.notify.transport import PermanentSendError, TransientSendError
from scheduler.phones import to_e164
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, Trigger
from tests.factories import add_audit, add_booking, add_client, fetch

HOUR = timedelta(hours=1)
OWN = "flavor_scheduler"


@dataclass
class History:
    """What was made: booking references by the state of their messages, and every contact's
    full phone number and email address (none may appear in the console's output)."""

    sent: dict[str, Any]
    failed: dict[str, Any]
    retrying: dict[str, Any]
    void: dict[str, Any]
    skipped: dict[str, Any]
    held: dict[str, Any]
    sending: dict[str, Any]
    addresses: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    def delivery(self, rows: list[Any], booking: dict[str, Any], channel: str, role: str = "client") -> Any:
        return next(
            row
            for row in rows
            if row.booking_reference == booking["booking_reference"]
            and row.channel == channel
            and row.recipient_role == role
        )


async def deliveries(engine: AsyncEngine) -> list[Any]:
    return await fetch(
        engine,
        f"SELECT id, booking_reference, channel, recipient_role, status, last_error, address, dedupe_key, "
        f"provider_message_id FROM {OWN}.deliveries ORDER BY created_at, id",
    )


async def _set(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def make_history(engine: AsyncEngine, settings: Settings) -> History:
    """Runs and messages in every state, dated now (the console and the jobs' subprocesses use the real clock)."""
    now = datetime.now(UTC)
    clock = FrozenClock(now)
    soon = now + 5 * HOUR

    async def booking(**values: Any) -> dict[str, Any]:
        client = await add_client(engine, **values.pop("client", {}))
        return await add_booking(engine, client=client, event_date=soon, created_at=now - 48 * HOUR, **values)

    made = {name: await booking() for name in ("sent", "retrying", "void", "skipped", "held", "sending")}
    made["failed"] = await booking(client={"phone": "12345"})  # an invalid number: failed at once
    history = History(**made)
    for value in made.values():
        for person in (value["client"], value["performer"]):
            history.addresses.append(person["email"])
            history.phones.append(person["phone"])
            if person["phone"] != "12345":
                history.phones.append(to_e164(person["phone"]))
    await add_audit(
        engine,
        event_type="booking",
        action="reminder_note",
        booking_id=made["sent"]["id"],
        details={"reference": made["sent"]["booking_reference"], "contact": made["sent"]["client"]["email"]},
        timestamp=now,
    )

    whatsapp, email = RecordingTransport(Channel.WHATSAPP), RecordingTransport(Channel.EMAIL)
    for name in ("retrying", "void", "held", "sending"):
        whatsapp.fail_to(to_e164(made[name]["client"]["phone"]), TransientSendError("HTTP 503 from the provider"))
    email.fail_to(made["failed"]["client"]["email"], PermanentSendError("422 validation_error: bad recipient"))

    full = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email})
    without_email = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp})
    await full.prepare_database()
    try:
        # The skipped booking is reminded while email is off: its emails are skipped (channel off).
        skipped_only = f"booking_reference <> '{made['skipped']['booking_reference']}'"
        await _set(engine, f"UPDATE bookings SET status = 'draft' WHERE {skipped_only}")
        await without_email.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
        await _set(engine, f"UPDATE bookings SET status = 'confirmed' WHERE {skipped_only}")
        await full.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.SCHEDULE)
        await full.runner.run(JobName.CLEANUP_STALE_BOOKINGS, trigger=Trigger.HTTP)

        # The void booking is cancelled while its client's WhatsApp waits to be retried.
        await _set(engine, "UPDATE bookings SET status = 'cancelled' WHERE id = :id", id=made["void"]["id"])
        whatsapp.clear_rules()
        for name in ("retrying", "held", "sending"):
            whatsapp.fail_to(to_e164(made[name]["client"]["phone"]), TransientSendError("HTTP 503 from the provider"))
        clock.advance(2 * 3600)
        await full.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.CATCH_UP)
        async with full.db.begin() as conn:
            for message in whatsapp.sent[:1]:
                await outbox_provider_statuses.record_provider_status(
                    conn, provider_id=whatsapp_id(whatsapp, message.delivery_id), status="delivered",
                    error_code=None, now=clock.now(),
                )  # fmt: skip
    finally:
        await without_email.aclose()
        await full.aclose()

    rows = await deliveries(engine)
    held = history.delivery(rows, made["held"], "whatsapp")
    sending = history.delivery(rows, made["sending"], "whatsapp")
    retrying = history.delivery(rows, made["retrying"], "whatsapp")
    # Quiet hours hold a message until morning; a replica that died left one `sending` under its lease.
    await _set(
        engine,
        f"UPDATE {OWN}.deliveries SET status = 'held', next_attempt_at = :later WHERE id = :id",
        id=held.id,
        later=now + 10 * HOUR,
    )
    await _set(
        engine,
        f"UPDATE {OWN}.deliveries SET status = 'sending', claimed_by = 'web-2:4242:dead01', "
        "lease_expires_at = now() + interval '1 hour' WHERE id = :id",
        id=sending.id,
    )
    # The retrying one waits an hour (so that no test's delivery run comes upon it by chance).
    await _set(
        engine, f"UPDATE {OWN}.deliveries SET next_attempt_at = :later WHERE id = :id", id=retrying.id, later=now + HOUR
    )
    await _set(
        engine,
        f"INSERT INTO {OWN}.job_runs (id, job_name, slot, trigger, status, replica_id, dry_run, attempt, "
        "started_at, finished_at, counts, errors) VALUES "
        "(:error_id, 'cleanup_old_audit_logs', 'x-error', 'schedule', 'error', 'web-2:4242:dead01', false, 1, "
        ":earlier, :earlier, CAST(:counts AS jsonb), CAST(:errors AS jsonb)), "
        "(:running_id, 'cleanup_expired_otps', 'x-running', 'take_over', 'running', 'web-3:77:abcdef', false, 2, "
        ":now, NULL, NULL, NULL)",
        error_id=uuid4(),
        running_id=uuid4(),
        earlier=now - 3 * HOUR,
        now=now,
        counts='{"deletedCount": 0}',
        errors='["database unreachable: connection refused by 10.0.0.5:5432"]',
    )
    await _set(
        engine, f"UPDATE {OWN}.job_runs SET lease_expires_at = now() + interval '40 seconds' WHERE slot = 'x-running'"
    )
    return history


def whatsapp_id(transport: RecordingTransport, delivery_id: UUID) -> str:
    """The provider id the recording transport answered for this delivery."""
    return next(sent.provider_id for sent in transport.accepted if sent.message.delivery_id == delivery_id)
