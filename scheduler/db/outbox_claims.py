"""Claiming due deliveries under a lease judged by the database's clock, renewing the lease while
they are sent, and handing back the ones never tried: who holds which message, and until when."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA, deliveries
from scheduler.records import ClaimedDelivery, OutgoingMessage
from scheduler.vocabulary import Channel, DeliveryStatus, MessageKind, Role

# Chooses deliveries that are due: pending or held ones whose next attempt has come (by the
# app's clock: business time), and ones left 'sending' by a sender whose lease ran out (it died,
# hung, or lost the database). Leases are judged by the database's clock, never a process's:
# replicas whose clocks differ by minutes agree on them. Rows another run holds are skipped, so
# concurrent senders never pick the same message. The choice is a MATERIALIZED CTE so it runs
# once: as an IN (subquery) the planner may rescan it per row and lock more than `limit` rows.
_CLAIM_SQL = text(
    f"""
    WITH chosen AS MATERIALIZED (
        SELECT id FROM {OWN_SCHEMA}.deliveries
        WHERE channel = :channel
          AND ((status IN ('pending', 'held') AND next_attempt_at <= :now)
               OR (status = 'sending' AND lease_expires_at < now()))
          AND (CAST(:only_ids AS uuid[]) IS NULL OR id = ANY(CAST(:only_ids AS uuid[])))
          AND batch_key IS NULL  -- an email batch that may have reached Resend is retried whole (db/email_batches.py)
        ORDER BY created_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = 'sending',
        attempts = d.attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        claimed_by = :claimer,
        -- a message left 'sending' may have reached the provider before its sender died
        ambiguous_since = CASE WHEN d.status = 'sending' THEN coalesce(d.ambiguous_since, d.updated_at)
                               ELSE d.ambiguous_since END,
        updated_at = :now
    FROM chosen
    WHERE d.id = chosen.id
    RETURNING d.id, d.booking_id, d.booking_reference, d.kind, d.channel, d.recipient_role, d.address,
              d.subject, d.body_text, d.body_html, d.content_sid, d.content_variables, d.attempts,
              d.ambiguous_since, d.created_at, d.first_failed_at
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
        "lease_seconds": lease.total_seconds(),
        "claimer": claimer,
        "limit": limit,
        "only_ids": list(only_ids) if only_ids is not None else None,
    }
    rows = await conn.execute(_CLAIM_SQL, params)
    claimed = [claimed_delivery(row) for row in rows]
    claimed.sort(key=lambda d: (d.created_at, str(d.id)))
    return claimed


def claimed_delivery(row: Any) -> ClaimedDelivery:
    message = OutgoingMessage(
        delivery_id=row.id,
        channel=Channel(row.channel),
        kind=MessageKind(row.kind),
        to=row.address or "",
        booking_reference=row.booking_reference,
        text=row.body_text,
        subject=row.subject,
        html=row.body_html,
        content_sid=row.content_sid,
        content_variables=dict(row.content_variables or {}),
        ambiguous_since=row.ambiguous_since,
    )
    return ClaimedDelivery(
        message=message,
        booking_id=row.booking_id,
        recipient_role=Role(row.recipient_role),
        attempts=row.attempts,
        created_at=row.created_at,
        first_failed_at=row.first_failed_at,
    )


async def renew_claims(
    conn: AsyncConnection, ids: Collection[UUID], *, channel: str, claimer: str, lease: timedelta
) -> int:
    """Extend, by the database's clock, the lease on the messages `ids` of `channel` this claimer is
    still sending. Only those: a message whose outcome could not be written is no longer being sent,
    and its lease must run out so that it is resumed (checked for the earlier attempt) elsewhere."""
    if not ids:
        return 0
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id.in_(list(ids)),
            deliveries.c.channel == channel,
            deliveries.c.claimed_by == claimer,
            deliveries.c.status == DeliveryStatus.SENDING,
        )
        .values(lease_expires_at=func.now() + lease)
    )
    return int(result.rowcount)


async def release_unsent(conn: AsyncConnection, ids: Sequence[UUID], *, claimer: str, now: datetime) -> None:
    """Hand back deliveries claimed but never attempted (the daemon is stopping)."""
    if not ids:
        return
    await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id.in_(list(ids)),
            deliveries.c.claimed_by == claimer,
            deliveries.c.status == DeliveryStatus.SENDING,
        )
        .values(
            status=DeliveryStatus.PENDING,
            claimed_by=None,
            lease_expires_at=None,
            attempts=deliveries.c.attempts - 1,
            updated_at=now,
        )
    )
