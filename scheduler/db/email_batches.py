"""Emails sent many to a request (Resend's /emails/batch). A batch's members carry its key
(`batch_key`) from before its first request until Resend's answer is known, so a batch that may
have reached Resend (a 5xx, a timeout, a dropped connection, a sender killed mid-request) is claimed
and retried whole, and Resend's idempotency answers the replay instead of sending again; outcomes
are written for a whole batch in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.outbox_claims import claimed_delivery
from scheduler.db.tables import OWN_SCHEMA
from scheduler.records import ClaimedDelivery

_DUE = """((d.status IN ('pending', 'held') AND d.next_attempt_at <= :now)
           OR (d.status = 'sending' AND d.lease_expires_at < now()))"""

# One due batch, with every unfinished member. The transaction-scoped advisory lock on its key
# keeps two claimers from taking parts of the same batch (safe behind a transaction-mode pooler);
# leases are judged by the database's clock, as in the single-message claim.
_CLAIM_BATCH_SQL = text(
    f"""
    WITH pinned AS MATERIALIZED (
        SELECT d.batch_key FROM {OWN_SCHEMA}.deliveries AS d
        WHERE d.channel = 'email' AND d.batch_key IS NOT NULL AND {_DUE}
          AND (CAST(:only_ids AS uuid[]) IS NULL OR d.id = ANY(CAST(:only_ids AS uuid[])))
          AND pg_try_advisory_xact_lock(hashtext('flavor_scheduler.email_batch:' || d.batch_key))
        ORDER BY d.next_attempt_at, d.batch_key
        LIMIT 1
    ), members AS MATERIALIZED (
        SELECT d.id FROM {OWN_SCHEMA}.deliveries AS d JOIN pinned USING (batch_key)
        WHERE d.status IN ('pending', 'held', 'sending')
        FOR UPDATE OF d
    )
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = 'sending',
        attempts = d.attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        claimed_by = :claimer,
        ambiguous_since = coalesce(d.ambiguous_since, d.updated_at),
        updated_at = :now
    FROM members
    WHERE d.id = members.id
    RETURNING d.id, d.booking_id, d.booking_reference, d.kind, d.channel, d.recipient_role, d.address,
              d.subject, d.body_text, d.body_html, d.content_sid, d.content_variables, d.attempts,
              d.ambiguous_since, d.created_at, d.first_failed_at, d.batch_key
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
)


async def claim_retried_batch(
    conn: AsyncConnection,
    *,
    now: datetime,
    lease: timedelta,
    claimer: str,
    only_ids: Sequence[UUID] | None = None,
) -> tuple[str, list[ClaimedDelivery]] | None:
    """Take the lease on a whole batch due again after an attempt that may have reached Resend:
    its key and members (sorted as when first sent), or None when none is due."""
    params = {
        "now": now,
        "lease_seconds": lease.total_seconds(),
        "claimer": claimer,
        "only_ids": list(only_ids) if only_ids is not None else None,
    }
    rows = list(await conn.execute(_CLAIM_BATCH_SQL, params))
    if not rows:
        return None
    members = [claimed_delivery(row) for row in rows]
    members.sort(key=lambda d: (d.created_at, str(d.id)))
    return str(rows[0].batch_key), members


_SENT_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = 'sent', provider_message_id = v.provider_id, sent_at = :now, updated_at = :now,
        ambiguous_since = NULL, last_error = NULL, lease_expires_at = NULL, batch_key = NULL,
        attempts = d.attempts + :extra_attempts
    FROM unnest(CAST(:ids AS uuid[]), CAST(:provider_ids AS text[])) AS v(id, provider_id)
    WHERE d.id = v.id AND {{claim}}
    RETURNING d.id
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
)
_SENT = text(_SENT_SQL.text.format(claim="d.claimed_by = :claimer AND d.status = 'sending'"))
# A member whose claim ran out went out all the same: recorded unless another sender already did.
_SENT_UNCLAIMED = text(_SENT_SQL.text.format(claim="d.status <> 'sent'"))


async def mark_batch_sent(
    conn: AsyncConnection, sent: Sequence[tuple[UUID, str | None]], *, claimer: str, extra_attempts: int, now: datetime
) -> set[UUID]:
    """Record the provider id of each member sent; returns those whose claim was still ours."""
    if not sent:
        return set()
    params = {
        "ids": [delivery_id for delivery_id, _ in sent],
        "provider_ids": [provider_id for _, provider_id in sent],
        "claimer": claimer,
        "extra_attempts": extra_attempts,
        "now": now,
    }
    ours = {row.id for row in await conn.execute(_SENT, params)}
    rest = [(delivery_id, provider_id) for delivery_id, provider_id in sent if delivery_id not in ours]
    if rest:
        unclaimed = {"ids": [d for d, _ in rest], "provider_ids": [p for _, p in rest], "extra_attempts": 0, "now": now}
        await conn.execute(_SENT_UNCLAIMED, unclaimed)
    return ours


_FAILED_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = 'failed', last_error = :reason, updated_at = :now, lease_expires_at = NULL, batch_key = NULL,
        attempts = d.attempts + :extra_attempts
    WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.claimed_by = :claimer AND d.status = 'sending'
    RETURNING d.id
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
)


async def mark_batch_failed(
    conn: AsyncConnection, ids: Sequence[UUID], *, claimer: str, reason: str, extra_attempts: int, now: datetime
) -> set[UUID]:
    """Failed for good, all for the same reason; returns those whose claim was still ours."""
    if not ids:
        return set()
    params = {"ids": list(ids), "claimer": claimer, "reason": reason, "extra_attempts": extra_attempts, "now": now}
    return {row.id for row in await conn.execute(_FAILED_SQL, params)}


_RETRY_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = 'pending', last_error = :reason, next_attempt_at = :next_attempt_at, claimed_by = NULL,
        lease_expires_at = NULL, updated_at = :now, batch_key = :batch_key,
        ambiguous_since = CASE WHEN CAST(:batch_key AS text) IS NULL THEN NULL
                               ELSE coalesce(d.ambiguous_since, :now) END,
        first_failed_at = coalesce(d.first_failed_at, :now), attempts = d.attempts + :extra_attempts
    WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.claimed_by = :claimer AND d.status = 'sending'
    RETURNING d.id
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
)


async def mark_batch_retry(
    conn: AsyncConnection,
    ids: Sequence[UUID],
    *,
    claimer: str,
    reason: str,
    next_attempt_at: datetime,
    batch_key: str | None,
    extra_attempts: int,
    now: datetime,
) -> set[UUID]:
    """Leave the members for a later run, all at `next_attempt_at`; with `batch_key` (the attempt may
    have reached Resend) they are retried as this batch, whole, under this key."""
    if not ids:
        return set()
    params = {
        "ids": list(ids),
        "claimer": claimer,
        "reason": reason,
        "next_attempt_at": next_attempt_at,
        "batch_key": batch_key,
        "extra_attempts": extra_attempts,
        "now": now,
    }
    return {row.id for row in await conn.execute(_RETRY_SQL, params)}


async def pin(conn: AsyncConnection, ids: Sequence[UUID], *, key: str, claimer: str) -> None:
    """Before a batch's request: should its answer never be known, it is retried as this batch."""
    await conn.execute(
        text(
            f"UPDATE {OWN_SCHEMA}.deliveries SET batch_key = :key "  # noqa: S608 - OWN_SCHEMA only
            "WHERE id = ANY(CAST(:ids AS uuid[])) AND claimed_by = :claimer AND status = 'sending'"
        ),
        {"ids": list(ids), "key": key, "claimer": claimer},
    )


async def unpin(conn: AsyncConnection, ids: Sequence[UUID]) -> None:
    """Forget the batch of these members (it can no longer be replayed as it was)."""
    if ids:
        await conn.execute(
            text(f"UPDATE {OWN_SCHEMA}.deliveries SET batch_key = NULL WHERE id = ANY(CAST(:ids AS uuid[]))"),  # noqa: S608
            {"ids": list(ids)},
        )
