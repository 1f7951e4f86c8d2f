"""How many messages stand where, per channel: reports (the backlog gauge, a dry run of the
deliveries, the demo's banner), kept apart from the statements that move a message on."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import deliveries
from scheduler.vocabulary import UNFINISHED_DELIVERIES, DeliveryStatus


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
