"""Writing messages owed into the outbox: a job's deliveries, and the SMS fallback a WhatsApp
message that failed for good owes. Every row is keyed by its dedupe key, so each is owed once."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA, deliveries
from scheduler.records import OwedDelivery
from scheduler.vocabulary import Channel, DeliveryStatus


def _row(owed: OwedDelivery) -> dict[str, Any]:
    row = {name: getattr(owed, name) for name in _OWED_COLUMNS}
    row.update(attempts=0, next_attempt_at=owed.created_at, updated_at=owed.created_at)
    return row


_OWED_COLUMNS = tuple(field.name for field in dataclasses.fields(OwedDelivery))


async def record_owed(conn: AsyncConnection, rows: Sequence[OwedDelivery]) -> list[UUID]:
    """Insert owed deliveries; one already owed (same dedupe key) is left as it is.

    Returns the ids actually inserted. SQLAlchemy sends the rows as multi-row INSERTs, as many
    per statement as PostgreSQL's parameter limit allows.
    """
    if not rows:
        return []
    statement = insert(deliveries).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(deliveries.c.id)
    return list((await conn.scalars(statement, [_row(owed) for owed in rows])).all())


# The SMS fallback of WhatsApp messages that failed for good (CONTRACT §2): one new delivery per
# WhatsApp delivery, with its text, to its number, owed now. Its dedupe key names the WhatsApp
# delivery, so however many senders, callbacks or reruns ask, it is owed once.
_SMS_FALLBACK_SQL = text(
    f"""
    INSERT INTO {OWN_SCHEMA}.deliveries AS new (
        id, dedupe_key, booking_id, booking_reference, kind, event_date, recipient_role, channel, address,
        body_text, status, attempts, next_attempt_at, run_id, created_at, updated_at)
    SELECT gen_random_uuid(), :prefix || d.id::text, d.booking_id, d.booking_reference, d.kind, d.event_date,
           d.recipient_role, :sms, d.address, d.body_text, :pending, 0, :now, d.run_id, :now, :now
    FROM {OWN_SCHEMA}.deliveries AS d
    WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.channel = :whatsapp AND d.address IS NOT NULL
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING new.id
    """
)
SMS_FALLBACK_PREFIX = "sms_fallback:"


async def owe_sms_fallbacks(conn: AsyncConnection, whatsapp_ids: Sequence[UUID], *, now: datetime) -> list[UUID]:
    """Owe the SMS fallback of these WhatsApp deliveries (once each); returns the SMS deliveries new here."""
    if not whatsapp_ids:
        return []
    params = {
        "ids": list(whatsapp_ids),
        "now": now,
        "prefix": SMS_FALLBACK_PREFIX,
        "sms": Channel.SMS.value,
        "whatsapp": Channel.WHATSAPP.value,
        "pending": DeliveryStatus.PENDING.value,
    }
    return list((await conn.scalars(_SMS_FALLBACK_SQL, params)).all())
