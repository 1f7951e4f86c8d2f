"""What the sender writes about claimed messages before they leave: those held for the quiet
hours, and the text written afresh from the booking as it stands. One statement per batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA
from scheduler.records import OutgoingMessage
from scheduler.vocabulary import DeliveryStatus

# Held messages were claimed but not tried: the attempt the claim counted is given back, and the
# claim released, so any sender takes them once their next attempt (the end of the quiet hours) comes.
_HOLD_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries
    SET status = '{DeliveryStatus.HELD}', next_attempt_at = :until, last_error = :reason,
        attempts = greatest(attempts - 1, 0), claimed_by = NULL, lease_expires_at = NULL, updated_at = :now
    WHERE id = ANY(CAST(:ids AS uuid[])) AND claimed_by = :claimer AND status = '{DeliveryStatus.SENDING}'
    """  # noqa: S608 - formatted from OWN_SCHEMA and statuses only; every value is a bind parameter
)


async def hold(
    conn: AsyncConnection, ids: Sequence[UUID], *, claimer: str, until: datetime, reason: str, now: datetime
) -> None:
    """Hand these claimed deliveries back as `held` until `until` (an absolute instant)."""
    if ids:
        params = {"ids": list(ids), "claimer": claimer, "until": until, "reason": reason, "now": now}
        await conn.execute(_HOLD_SQL, params)


# The content as it will be sent, written before it is: should the send's answer be lost (a
# timeout, the process killed), the next sender looks for this text at the provider.
_REWRITE_SQL = text(
    f"""
    UPDATE {OWN_SCHEMA}.deliveries AS d
    SET subject = v.subject, body_text = v.body_text, body_html = v.body_html,
        content_variables = CAST(v.variables AS jsonb)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:subjects AS text[]), CAST(:texts AS text[]),
                CAST(:htmls AS text[]), CAST(:variables AS text[]))
         AS v (id, subject, body_text, body_html, variables)
    WHERE d.id = v.id AND d.claimed_by = :claimer AND d.status = '{DeliveryStatus.SENDING}'
    """  # noqa: S608 - formatted from OWN_SCHEMA and statuses only; every value is a bind parameter
)


async def rewrite_content(conn: AsyncConnection, messages: Sequence[OutgoingMessage], *, claimer: str) -> None:
    """Store the text these claimed messages will be sent with."""
    if not messages:
        return
    params = {
        "ids": [message.delivery_id for message in messages],
        "subjects": [message.subject for message in messages],
        "texts": [message.text for message in messages],
        "htmls": [message.html for message in messages],
        "variables": [json.dumps(message.content_variables) if message.content_sid else None for message in messages],
        "claimer": claimer,
    }
    await conn.execute(_REWRITE_SQL, params)
