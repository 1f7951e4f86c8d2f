"""Writing messages owed into the outbox: a job's deliveries, and the SMS fallback a WhatsApp
message that failed for good owes. Every row is keyed by its dedupe key, so each is owed once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import DateTime, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as UUID_TYPE
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA, deliveries
from scheduler.records import OwedDelivery
from scheduler.vocabulary import Channel, DeliveryStatus

_OWED_COLUMNS = tuple(field.name for field in dataclasses.fields(OwedDelivery))
_ARRAY_OF = {UUID_TYPE: "uuid[]", Text: "text[]", DateTime: "timestamptz[]", JSONB: "jsonb[]"}


def _array_type(column: str) -> str:
    return next(array for kind, array in _ARRAY_OF.items() if isinstance(deliveries.c[column].type, kind))


# One column of values each (`unnest`), not one parameter per value: 8,000 messages of 17 columns
# are 17 parameters, where a multi-row VALUES list has 136,000 for SQLAlchemy to bind and the
# server to parse.
_RECORD_OWED_SQL = text(
    f"""
    INSERT INTO {OWN_SCHEMA}.deliveries ({", ".join(_OWED_COLUMNS)}, attempts, next_attempt_at, updated_at)
    SELECT {", ".join(_OWED_COLUMNS)}, 0, created_at, created_at
    FROM unnest({", ".join(f"CAST(:{column} AS {_array_type(column)})" for column in _OWED_COLUMNS)})
        AS owed ({", ".join(_OWED_COLUMNS)})
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
    """
)


async def record_owed(conn: AsyncConnection, rows: Sequence[OwedDelivery]) -> list[UUID]:
    """Insert owed deliveries, in one statement; one already owed (same dedupe key) is left as it
    is. Returns the ids actually inserted."""
    if not rows:
        return []
    columns: dict[str, list[Any]] = {column: [getattr(row, column) for row in rows] for column in _OWED_COLUMNS}
    columns["content_variables"] = [None if v is None else json.dumps(v) for v in columns["content_variables"]]
    return list((await conn.scalars(_RECORD_OWED_SQL, columns)).all())


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
