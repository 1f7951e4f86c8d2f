"""The deliveries table: messages owed, claimed under a lease, and what became of each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import deliveries

_UNFINISHED = ("pending", "sending")


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery this process now holds the lease on."""

    id: UUID
    booking_id: UUID
    booking_reference: str
    kind: str
    channel: str
    recipient_role: str
    address: str | None
    subject: str | None
    body_text: str
    body_html: str | None
    content_sid: str | None
    content_variables: dict[str, str]
    attempts: int  # including this one
    ambiguous_since: datetime | None
    created_at: datetime


async def record_owed(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[UUID]:
    """Insert owed deliveries; one already owed (same dedupe key) is left as it is.

    Returns the ids actually inserted. SQLAlchemy sends the rows as multi-row INSERTs, as many
    per statement as PostgreSQL's parameter limit allows.
    """
    if not rows:
        return []
    statement = insert(deliveries).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(deliveries.c.id)
    return list((await conn.scalars(statement, list(rows))).all())


# Chooses deliveries that are due: pending ones whose next attempt has come, and ones left
# 'sending' by a run whose lease ran out (it died, or lost the database). Rows another run
# holds are skipped, so concurrent senders never pick the same message. The choice is a
# MATERIALIZED CTE so it runs once: as an IN (subquery) the planner may rescan it per row and
# lock more than `limit` rows.
_CLAIM_SQL = text(
    """
    WITH chosen AS MATERIALIZED (
        SELECT id FROM flavor_scheduler.deliveries
        WHERE channel = :channel
          AND ((status = 'pending' AND next_attempt_at <= :now)
               OR (status = 'sending' AND lease_expires_at < :now))
          AND (CAST(:only_ids AS uuid[]) IS NULL OR id = ANY(CAST(:only_ids AS uuid[])))
        ORDER BY created_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE flavor_scheduler.deliveries AS d
    SET status = 'sending',
        attempts = d.attempts + 1,
        lease_expires_at = :lease_until,
        claimed_by = :claimer,
        -- a message left 'sending' may have reached the provider before its sender died
        ambiguous_since = CASE WHEN d.status = 'sending' THEN coalesce(d.ambiguous_since, d.updated_at)
                               ELSE d.ambiguous_since END,
        updated_at = :now
    FROM chosen
    WHERE d.id = chosen.id
    RETURNING d.id, d.booking_id, d.booking_reference, d.kind, d.channel, d.recipient_role, d.address,
              d.subject, d.body_text, d.body_html, d.content_sid, d.content_variables, d.attempts,
              d.ambiguous_since, d.created_at
    """
)


async def claim_due(
    conn: AsyncConnection,
    *,
    channel: str,
    now: datetime,
    lease: timedelta,
    claimer: str,
    limit: int,
    only_ids: Sequence[UUID] | None = None,
) -> list[ClaimedDelivery]:
    """Take the lease on up to `limit` due deliveries of one channel, oldest first."""
    params = {
        "channel": channel,
        "now": now,
        "lease_until": now + lease,
        "claimer": claimer,
        "limit": limit,
        "only_ids": list(only_ids) if only_ids is not None else None,
    }
    rows = await conn.execute(_CLAIM_SQL, params)
    claimed = [
        ClaimedDelivery(
            id=row.id,
            booking_id=row.booking_id,
            booking_reference=row.booking_reference,
            kind=row.kind,
            channel=row.channel,
            recipient_role=row.recipient_role,
            address=row.address,
            subject=row.subject,
            body_text=row.body_text,
            body_html=row.body_html,
            content_sid=row.content_sid,
            content_variables=dict(row.content_variables or {}),
            attempts=row.attempts,
            ambiguous_since=row.ambiguous_since,
            created_at=row.created_at,
        )
        for row in rows
    ]
    claimed.sort(key=lambda d: (d.created_at, str(d.id)))
    return claimed


def _mine(delivery_id: UUID, claimer: str) -> Any:
    return (deliveries.c.id == delivery_id) & (deliveries.c.claimed_by == claimer) & (deliveries.c.status == "sending")


async def mark_sent(
    conn: AsyncConnection, delivery_id: UUID, *, claimer: str, provider_id: str, extra_attempts: int, now: datetime
) -> None:
    await conn.execute(
        update(deliveries)
        .where(_mine(delivery_id, claimer))
        .values(
            status="sent",
            provider_message_id=provider_id,
            sent_at=now,
            updated_at=now,
            lease_expires_at=None,
            ambiguous_since=None,
            last_error=None,
            attempts=deliveries.c.attempts + extra_attempts,
        )
    )


async def mark_failed(
    conn: AsyncConnection, delivery_id: UUID, *, claimer: str, reason: str, extra_attempts: int, now: datetime
) -> None:
    await conn.execute(
        update(deliveries)
        .where(_mine(delivery_id, claimer))
        .values(
            status="failed",
            last_error=reason,
            updated_at=now,
            lease_expires_at=None,
            attempts=deliveries.c.attempts + extra_attempts,
        )
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
) -> None:
    await conn.execute(
        update(deliveries)
        .where(_mine(delivery_id, claimer))
        .values(
            status="pending",
            last_error=reason,
            next_attempt_at=next_attempt_at,
            ambiguous_since=ambiguous_since,
            updated_at=now,
            lease_expires_at=None,
            claimed_by=None,
            attempts=deliveries.c.attempts + extra_attempts,
        )
    )


async def release_unsent(conn: AsyncConnection, ids: Sequence[UUID], *, claimer: str, now: datetime) -> None:
    """Hand back deliveries claimed but never attempted (the daemon is stopping)."""
    if not ids:
        return
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)), deliveries.c.claimed_by == claimer, deliveries.c.status == "sending")
        .values(
            status="pending",
            claimed_by=None,
            lease_expires_at=None,
            attempts=deliveries.c.attempts - 1,
            updated_at=now,
        )
    )


async def unfinished_by_channel(conn: AsyncConnection) -> dict[str, int]:
    """How many messages are still owed, per channel (the messages_pending gauge)."""
    statement = (
        select(deliveries.c.channel, func.count())
        .where(deliveries.c.status.in_(_UNFINISHED))
        .group_by(deliveries.c.channel)
    )
    return {row[0]: int(row[1]) for row in await conn.execute(statement)}


async def record_provider_status(
    conn: AsyncConnection, *, provider_id: str, status: str, error_code: str | None, now: datetime
) -> str | None:
    """Store a later status reported by the provider; returns the delivery's channel, or None if unknown."""
    statement = (
        update(deliveries)
        .where(deliveries.c.provider_message_id == provider_id)
        .values(
            provider_status=status,
            provider_error_code=error_code,
            provider_status_at=now,
            updated_at=now,
        )
        .returning(deliveries.c.channel)
    )
    channel: str | None = (await conn.scalars(statement)).first()
    return channel
