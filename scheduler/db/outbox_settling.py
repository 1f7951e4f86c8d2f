"""Writing how a claimed delivery ended (sent, failed, left for a later try), only while the
claim is still the writer's, and the one case where it is not: a message that went out late."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy import BindParameter, ColumnElement, Update, bindparam, func, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import deliveries
from scheduler.vocabulary import DeliveryStatus


class FirstOnly(NamedTuple):
    """A value written only where the column is still NULL (the first failure's time)."""

    value: Any


@functools.cache
def _settle_statement(columns: tuple[str, ...], first_only: frozenset[str]) -> Update:
    """The settling UPDATE for these columns, built once: building it costs more than running it."""

    def new(column: str) -> ColumnElement[Any]:
        value: BindParameter[Any] = bindparam(f"new_{column}")
        return func.coalesce(deliveries.c[column], value) if column in first_only else value

    return (
        update(deliveries)
        .where(
            deliveries.c.id == bindparam("delivery_id"),
            deliveries.c.claimed_by == bindparam("claimer"),
            deliveries.c.status == DeliveryStatus.SENDING,
        )
        .values(
            lease_expires_at=None,
            attempts=deliveries.c.attempts + bindparam("extra_attempts"),
            **{column: new(column) for column in columns},
        )
    )


async def _settle(conn: AsyncConnection, delivery_id: UUID, claimer: str, extra_attempts: int, **values: Any) -> bool:
    """Write how a claimed delivery ended, if the claim is still this claimer's; True when it was."""
    first_only = frozenset(column for column, value in values.items() if isinstance(value, FirstOnly))
    statement = _settle_statement(tuple(values), first_only)
    parameters = {
        f"new_{column}": value.value if isinstance(value, FirstOnly) else value for column, value in values.items()
    }
    result = await conn.execute(
        statement, {"delivery_id": delivery_id, "claimer": claimer, "extra_attempts": extra_attempts, **parameters}
    )
    return bool(result.rowcount)


def _sent(provider_id: str | None, now: datetime) -> dict[str, Any]:
    """What a delivery that went out holds, however it came to be recorded."""
    return {
        "status": DeliveryStatus.SENT,
        "provider_message_id": provider_id,
        "sent_at": now,
        "updated_at": now,
        "last_error": None,
    }


async def mark_sent(
    conn: AsyncConnection,
    delivery_id: UUID,
    *,
    claimer: str,
    provider_id: str | None,
    extra_attempts: int,
    now: datetime,
) -> bool:
    return await _settle(conn, delivery_id, claimer, extra_attempts, **_sent(provider_id, now), ambiguous_since=None)


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
        first_failed_at=FirstOnly(now),
    )


async def record_sent_unclaimed(
    conn: AsyncConnection, delivery_id: UUID, *, provider_id: str | None, now: datetime
) -> None:
    """A message went out after its sender lost the claim: mark it sent unless another sender
    already did (then its own provider id stands)."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status != DeliveryStatus.SENT)
        .values(**_sent(provider_id, now), lease_expires_at=None)
    )
