"""Suppressed addresses (CONTRACT §2): bounced or complained email addresses, opted-out phone
numbers. An address is kept only as the SHA-256 of its normalised form (email lower-cased, phone
in E.164) beside a masked form for operators: a lookup needs the address, a reader of the table
learns none (a phone number's hash can be brute-forced, so it is pseudonymous, not anonymous)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.addresses import address_hash, kind_of_address, masked, normalised
from scheduler.db.tables import OWN_SCHEMA, deliveries, suppressions
from scheduler.vocabulary import SUPPRESSED, AddressKind, Channel, DeliveryStatus, SuppressionReason


def kind_of(channel: Channel | str) -> AddressKind:
    return AddressKind.EMAIL if channel == Channel.EMAIL else AddressKind.PHONE


@dataclass(frozen=True, slots=True)
class Suppression:
    """One suppressed address, as an operator sees it."""

    address_hash: str
    kind: AddressKind
    masked_address: str
    reason: SuppressionReason
    source: str
    detail: str | None
    provider_message_id: str | None
    suppressed_at: datetime


@dataclass(frozen=True, slots=True)
class NewSuppression:
    """An address a provider told us to stop writing to."""

    address: str
    kind: AddressKind
    reason: SuppressionReason
    source: str
    detail: str | None = None
    provider_message_id: str | None = None


async def suppress(conn: AsyncConnection, entries: Sequence[NewSuppression], *, now: datetime) -> int:
    """Record suppressed addresses; one already suppressed keeps its first reason. Returns how
    many are new. An address that cannot be normalised (not a phone number) is left out."""
    rows = {}
    for entry in entries:
        try:
            address = normalised(entry.address, entry.kind)
        except ValueError:
            continue
        digest = address_hash(address, entry.kind)
        rows[digest] = {
            "address_hash": digest,
            "address_kind": entry.kind.value,
            "masked_address": masked(address, entry.kind),
            "reason": entry.reason.value,
            "source": entry.source,
            "detail": entry.detail,
            "provider_message_id": entry.provider_message_id,
            "suppressed_at": now,
        }
    if not rows:
        return 0
    statement = insert(suppressions).on_conflict_do_nothing(index_elements=["address_hash"])
    result = await conn.execute(statement.returning(suppressions.c.address_hash), list(rows.values()))
    return len(result.all())


# Skips, in one statement, those of a claimed batch whose address is suppressed. The hash is
# computed here from the address as the outbox holds it: phone numbers are stored in E.164 and
# emails as written, so lower-casing makes both the normalised form `address_hash` hashes.
_SKIP_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = :skipped, last_error = :reason, lease_expires_at = NULL,
        claimed_by = NULL, updated_at = :now
    FROM {OWN_SCHEMA}.suppressions AS s
    WHERE d.id = ANY(CAST(:ids AS uuid[]))
      AND d.address IS NOT NULL
      AND NOT d.suppression_overridden  -- the operator's `resend --force` of this one message
      AND s.address_hash = encode(sha256(convert_to(
            CASE WHEN d.channel = 'email' THEN lower(btrim(d.address)) ELSE d.address END, 'UTF8')), 'hex')
      AND s.address_kind = CASE WHEN d.channel = 'email' THEN 'email' ELSE 'phone' END
    RETURNING d.id
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
)


async def skip_suppressed(conn: AsyncConnection, ids: Sequence[UUID], *, now: datetime) -> set[UUID]:
    """Make `skipped` (reason `suppressed`) those of these claimed deliveries whose address is suppressed."""
    if not ids:
        return set()
    params = {"ids": list(ids), "now": now, "skipped": DeliveryStatus.SKIPPED.value, "reason": SUPPRESSED}
    rows = await conn.execute(_SKIP_SQL, params)
    return {row.id for row in rows}


async def list_suppressions(conn: AsyncConnection, *, limit: int | None = None) -> list[Suppression]:
    """Every suppressed address, newest first."""
    statement = select(suppressions).order_by(suppressions.c.suppressed_at.desc(), suppressions.c.address_hash)
    if limit is not None:
        statement = statement.limit(limit)
    return [_suppression(row) for row in await conn.execute(statement)]


async def lift(conn: AsyncConnection, address: str) -> Suppression | None:
    """Let messages reach `address` again (an email address or a phone number); the lifted entry, or None."""
    digest = address_hash(
        address, kind_of_address(address)
    )  # raises InvalidPhoneNumber (a ValueError) for a non-number
    statement = delete(suppressions).where(suppressions.c.address_hash == digest).returning(*suppressions.c)
    row = (await conn.execute(statement)).first()
    return None if row is None else _suppression(row)


def _suppression(row: Any) -> Suppression:
    return Suppression(
        address_hash=row.address_hash,
        kind=AddressKind(row.address_kind),
        masked_address=row.masked_address,
        reason=SuppressionReason(row.reason),
        source=row.source,
        detail=row.detail,
        provider_message_id=row.provider_message_id,
        suppressed_at=row.suppressed_at,
    )


async def suppress_recipient_of(
    conn: AsyncConnection, provider_id: str, entry: NewSuppression, *, now: datetime
) -> int:
    """Suppress the address of the delivery the provider knows as `provider_id` (a status
    callback names the message, not the number); `entry.address` is ignored. Returns 0 or 1."""
    address = (
        await conn.scalars(select(deliveries.c.address).where(deliveries.c.provider_message_id == provider_id).limit(1))
    ).first()
    if not address:
        return 0
    return await suppress(conn, [dataclasses.replace(entry, address=address)], now=now)
