"""The deliveries table: messages owed, claimed under a lease, and what became of each."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA, deliveries
from scheduler.records import ClaimedDelivery, OutgoingMessage, OwedDelivery
from scheduler.vocabulary import UNFINISHED_DELIVERIES, Channel, DeliveryStatus, MessageKind, Role


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


async def renew_claims(conn: AsyncConnection, *, channel: str, claimer: str, lease: timedelta) -> int:
    """Extend, by the database's clock, the lease on every message of `channel` this claimer is sending."""
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.channel == channel,
            deliveries.c.claimed_by == claimer,
            deliveries.c.status == DeliveryStatus.SENDING,
        )
        .values(lease_expires_at=func.now() + lease)
    )
    return int(result.rowcount)


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


async def unfinished_by_channel(conn: AsyncConnection) -> dict[str, int]:
    """How many messages are still owed and not waiting for the quiet hours to end, per channel
    (the messages_pending gauge: a night of held reminders is not a backlog growing)."""
    waiting = [status for status in UNFINISHED_DELIVERIES if status is not DeliveryStatus.HELD]
    statement = (
        select(deliveries.c.channel, func.count())
        .where(deliveries.c.status.in_(waiting))
        .group_by(deliveries.c.channel)
    )
    return {row[0]: int(row[1]) for row in await conn.execute(statement)}


async def count_by_channel_and_status(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """How many messages stand in each status, per channel: `{channel: {status: count}}`."""
    statement = select(deliveries.c.channel, deliveries.c.status, func.count()).group_by(
        deliveries.c.channel, deliveries.c.status
    )
    counts: dict[str, dict[str, int]] = {}
    for channel, status, count in await conn.execute(statement):
        counts.setdefault(str(channel), {})[str(status)] = int(count)
    return counts


# The order of a message's later statuses: a callback never moves a message back (Twilio sends
# them concurrently, so they may arrive out of order), and failed/undelivered are final, their
# error code kept. Statuses not listed rank lowest.
STATUS_RANKS: dict[str, int] = {
    "accepted": 1, "scheduled": 1, "queued": 1, "sending": 1,
    "sent": 2, "delivery_delayed": 2, "delivered": 3, "read": 4,
    "undelivered": 5, "failed": 5, "canceled": 5, "bounced": 5, "complained": 5,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StatusRecorded:
    """What a provider's status report did: the delivery's channel (None: no such message) and
    whether the status was news (False for a replayed or out-of-order report)."""

    channel: str | None
    applied: bool


async def record_provider_status(
    conn: AsyncConnection, *, provider_id: str, status: str, error_code: str | None, now: datetime
) -> StatusRecorded:
    """Store a later status reported by the provider, unless the message is already at that stage or later."""
    current_rank = case(STATUS_RANKS, value=deliveries.c.provider_status, else_=0)
    statement = (
        update(deliveries)
        .where(deliveries.c.provider_message_id == provider_id, current_rank < STATUS_RANKS.get(status, 0))
        .values(provider_status=status, provider_error_code=error_code, provider_status_at=now, updated_at=now)
        .returning(deliveries.c.channel)
    )
    channel: str | None = (await conn.scalars(statement)).first()
    if channel is not None:
        return StatusRecorded(channel, applied=True)
    known = select(deliveries.c.channel).where(deliveries.c.provider_message_id == provider_id).limit(1)
    return StatusRecorded((await conn.scalars(known)).first(), applied=False)


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


async def whatsapp_delivery_of(conn: AsyncConnection, provider_id: str) -> UUID | None:
    """The WhatsApp delivery Twilio knows as `provider_id`, if it is one."""
    statement = select(deliveries.c.id).where(
        deliveries.c.provider_message_id == provider_id, deliveries.c.channel == Channel.WHATSAPP.value
    )
    found: UUID | None = (await conn.scalars(statement.limit(1))).first()
    return found
