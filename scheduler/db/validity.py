"""Whether a message is still true when it is about to leave (CONTRACT §2): the booking it speaks
of is re-read as it stands, in the transaction that claims the message, and a message that no
longer holds is made `void` with its reason instead of being sent. One statement per claimed
batch, never one per message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.bookings import ACTIVE_STATUSES, BALANCE_DUE_PAYMENT_STATUS, CANCELLED
from scheduler.db.tables import OWN_SCHEMA
from scheduler.vocabulary import DeliveryStatus

# Each rule of CONTRACT §2, in the order a reason is given; the first that holds voids the message.
# The statuses are those the due queries use (db/bookings.py), passed in, so each is written once.
# Reminders speak of an active booking, for the event_date they were written for, more than the
# lead time away; a payment reminder of a balance still due on a deposit paid; a cancellation
# notice of a booking still cancelled. A recipient who has since opted out gets nothing.
_REASONS = """
    CASE
        WHEN b.id IS NULL THEN 'the booking no longer exists'
        WHEN d.kind = 'booking_cancelled' AND b.status IS DISTINCT FROM :cancelled
            THEN 'the booking is no longer cancelled (' || coalesce(b.status, 'no status') || ')'
        WHEN d.kind <> 'booking_cancelled' AND NOT (coalesce(b.status, '') = ANY(CAST(:active AS text[])))
            THEN 'the booking is ' || coalesce(b.status, 'without a status') || ' now'
        WHEN d.kind <> 'booking_cancelled' AND b.event_date IS DISTINCT FROM d.event_date
            THEN 'the event was moved'
        WHEN d.kind <> 'booking_cancelled' AND b.event_date <= CAST(:earliest AS timestamptz)
            THEN 'the event is less than ' || CAST(:lead_minutes AS text) || ' minutes away'
        WHEN d.kind = 'payment_reminder' AND b.payment_status IS DISTINCT FROM :balance_status
            THEN 'the payment status is ' || coalesce(b.payment_status, 'unknown') || ' now'
        WHEN d.kind = 'payment_reminder' AND NOT (b.total_amount - coalesce(b.deposit_amount, 0) > 0)
            THEN 'no balance is due any more'
        {opted_out}
    END
"""
_OPTED_OUT = """
        WHEN d.channel = 'email' AND prefs.email_notifications IS FALSE THEN 'the recipient opted out of email'
        WHEN d.channel <> 'email' AND prefs.sms_notifications IS FALSE THEN 'the recipient opted out of messages'
        WHEN d.kind = 'payment_reminder' AND prefs.payment_reminders IS FALSE
            THEN 'the recipient opted out of payment reminders'
"""
_PREFERENCES_JOIN = """
        LEFT JOIN clients AS c ON d.recipient_role = 'client' AND c.id = b.client_id
        LEFT JOIN performers AS p ON d.recipient_role = 'performer' AND p.id = b.performer_id
        LEFT JOIN notification_preferences AS prefs ON prefs.user_id = coalesce(c.user_id, p.user_id)
"""


def _void_sql(*, with_preferences: bool) -> str:
    reasons = _REASONS.format(opted_out=_OPTED_OUT if with_preferences else "")
    return f"""
    WITH judged AS MATERIALIZED (
        SELECT d.id, {reasons} AS reason
        FROM {OWN_SCHEMA}.deliveries AS d
        LEFT JOIN bookings AS b ON b.id = d.booking_id
        {_PREFERENCES_JOIN if with_preferences else ""}
        WHERE d.id = ANY(CAST(:ids AS uuid[]))
    )
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET status = '{DeliveryStatus.VOID}', last_error = judged.reason, lease_expires_at = NULL,
        claimed_by = NULL, updated_at = :now
    FROM judged
    WHERE d.id = judged.id AND judged.reason IS NOT NULL
    RETURNING d.id, judged.reason
    """


_VOID = {flag: text(_void_sql(with_preferences=flag)) for flag in (True, False)}


async def void_untrue(
    conn: AsyncConnection, ids: Sequence[UUID], *, now: datetime, lead: timedelta, with_preferences: bool
) -> dict[UUID, str]:
    """Make `void` those of these (claimed) deliveries that are no longer true; returns id → reason."""
    if not ids:
        return {}
    params = {
        "ids": list(ids),
        "now": now,
        "earliest": now + lead,
        "lead_minutes": str(int(lead.total_seconds() // 60)),
        "cancelled": CANCELLED,
        "active": list(ACTIVE_STATUSES),
        "balance_status": BALANCE_DUE_PAYMENT_STATUS,
    }
    rows = await conn.execute(_VOID[with_preferences], params)
    return {row.id: row.reason for row in rows}
