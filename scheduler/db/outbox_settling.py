"""Writing how a claimed delivery ended (sent, failed, left for a later try), only while the
claim is still the writer's, and the one case where it is not: a message that went out late."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import deliveries
from scheduler.vocabulary import DeliveryStatus


async def _settle(conn: AsyncConnection, delivery_id: UUID, claimer: str, extra_attempts: int, **values: Any) -> bool:
    """Write how a claimed delivery ended, if the claim is still this claimer's; True when it was."""
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.claimed_by == claimer,
            deliveries.c.status == DeliveryStatus.SENDING,
        )
        .values(lease_expires_at=None, attempts=deliveries.c.attempts + extra_attempts, **values)
    )
    return bool(result.rowcount)


async def mark_sent(
    conn: AsyncConnection,
    delivery_id: UUID,
    *,
    claimer: str,
    provider_id: str | None,
    extra_attempts: int,
    now: datetime,
) -> bool:
    return await _settle(
        conn,
        delivery_id,
        claimer,
        extra_attempts,
        status=DeliveryStatus.SENT,
        provider_message_id=provider_id,
        sent_at=now,
        updated_at=now,
        ambiguous_since=None,
        last_error=None,
    )


async def mark_failed(
    conn: AsyncConnection, delivery_id: UUID, *, claimer: str, reason: str, extra_attempts: int, now: datetime
) -> bool:
    return await _settle(
        conn, delivery_id, claimer, extra_attempts, status=DeliveryStatus.FAILED, last_error=reason, updated_at=now
    )


async def mark_retry(
    conn: AsyncConnection,
    delivery_id: UUID,
    *,
    claimer: str,
    reason: str,
    next_attempt_at: datetime,
    ambiguous_since: datetime | None,
    extra_attempts: int,
    now: datetime,
) -> bool:
    """Leave the delivery for a later run, at `next_attempt_at`."""
    return await _settle(
        conn,
        delivery_id,
        claimer,
        extra_attempts,
        status=DeliveryStatus.PENDING,
        last_error=reason,
        next_attempt_at=next_attempt_at,
        ambiguous_since=ambiguous_since,
        updated_at=now,
        claimed_by=None,
        first_failed_at=func.coalesce(deliveries.c.first_failed_at, now),
    )


async def record_sent_unclaimed(
    conn: AsyncConnection, delivery_id: UUID, *, provider_id: str | None, now: datetime
) -> None:
    """A message went out after its sender lost the claim: mark it sent unless another sender
    already did (then its own provider id stands)."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status != DeliveryStatus.SENT)
        .values(
            status=DeliveryStatus.SENT,
            provider_message_id=provider_id,
            sent_at=now,
            updated_at=now,
            lease_expires_at=None,
            last_error=None,
        )
    )
