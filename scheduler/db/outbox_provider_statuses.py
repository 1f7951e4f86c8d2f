"""What the providers report about a message after it left (Twilio's callbacks, Resend's
webhook): the later status, kept in order, and which delivery a provider's id names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import deliveries
from scheduler.vocabulary import Channel

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


async def whatsapp_delivery_of(conn: AsyncConnection, provider_id: str) -> UUID | None:
    """The WhatsApp delivery Twilio knows as `provider_id`, if it is one."""
    statement = select(deliveries.c.id).where(
        deliveries.c.provider_message_id == provider_id, deliveries.c.channel == Channel.WHATSAPP.value
    )
    found: UUID | None = (await conn.scalars(statement.limit(1))).first()
    return found
