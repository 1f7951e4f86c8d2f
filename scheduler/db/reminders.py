"""The reminder ledger: which bookings are owed a reminder of a kind for their current event_date,
and claiming them, once per (booking, kind, event_date) episode across runs and replicas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    DateTime,
    Text,
    bindparam,
    func,
    literal,
    not_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.bookings import ACTIVE_STATUSES, BALANCE_DUE_PAYMENT_STATUS, records_query, to_record
from scheduler.db.tables import (
    OWN_SCHEMA,
    booking_reminders,
    bookings,
)
from scheduler.records import BookingRecord


@dataclass(frozen=True, slots=True)
class DueReminder:
    """A booking owed a reminder of one kind for its current event_date.

    `reminded_before` is when a reminder of this kind was last recorded for this same
    event_date, before the booking moved away and back (A -> B -> A); None the first time.
    It tells this reminder's messages apart from the earlier ones for that date.
    """

    record: BookingRecord
    reminded_before: datetime | None


def _reminded_for_current_date(kind: str) -> Any:
    """The ledger's row of this kind for the booking's current event_date, if it is the latest.

    The latest row per (booking, kind), by `recorded_at`, is the reminder last sent; a row for
    the current date that a later one (another date) superseded owes the reminder again.
    """
    reminded = booking_reminders.alias("reminded")
    newer = booking_reminders.alias("newer")
    superseded = (
        select(literal(1))
        .where(
            newer.c.booking_id == reminded.c.booking_id,
            newer.c.kind == reminded.c.kind,
            newer.c.recorded_at > reminded.c.recorded_at,
        )
        .exists()
    )
    return (
        select(literal(1))
        .where(
            reminded.c.booking_id == bookings.c.id,
            reminded.c.kind == kind,
            reminded.c.event_date == bookings.c.event_date,
            not_(superseded),
        )
        .exists()
    )


async def find_due_reminders(
    conn: AsyncConnection,
    *,
    kind: str,
    earliest_event: datetime,
    latest_event: datetime,
    balance_due_only: bool,
    with_preferences: bool,
    limit: int,
    exclude: Iterable[UUID] = (),
) -> list[DueReminder]:
    """Active bookings whose event falls in (earliest, latest] and whose latest reminder of this
    kind was not for their current event_date: due-based, so a missed hour is caught up, and a
    booking moved A -> B -> A is owed the reminder for A again."""
    earlier = booking_reminders.alias("earlier")
    reminded_before = (
        select(earlier.c.recorded_at)
        .where(
            earlier.c.booking_id == bookings.c.id,
            earlier.c.kind == kind,
            earlier.c.event_date == bookings.c.event_date,
        )
        .scalar_subquery()
        .label("reminded_before")
    )
    conditions: list[Any] = [
        bookings.c.status.in_(ACTIVE_STATUSES),
        bookings.c.event_date > earliest_event,
        bookings.c.event_date <= latest_event,
        not_(_reminded_for_current_date(kind)),
    ]
    if balance_due_only:
        conditions += [
            bookings.c.payment_status == BALANCE_DUE_PAYMENT_STATUS,
            (bookings.c.total_amount - func.coalesce(bookings.c.deposit_amount, 0)) > 0,
        ]
    excluded = list(exclude)
    if excluded:
        conditions.append(bookings.c.id.not_in(excluded))
    statement = (
        records_query(with_preferences)
        .add_columns(reminded_before)
        .where(*conditions)
        .order_by(bookings.c.event_date, bookings.c.id)
        .limit(limit)
    )
    return [DueReminder(to_record(row, with_preferences), row.reminded_before) for row in await conn.execute(statement)]


# The ledger's claim. A booking's first reminder for a date inserts its row. One moved away and
# back (A -> B -> A) finds A's row superseded by B's and takes it over (run_id, recorded_at), so
# A's row is the latest again. A row that is already the latest (this date, reminded) is left
# alone and its booking is not returned: PostgreSQL re-checks the WHERE on the row's newest
# version after waiting for a concurrent claimant, so the loser of a race wins nothing.
# recorded_at is at least a microsecond after the booking's latest row of that kind, so "the
# latest reminder" is never a tie, whatever the clocks of the runs that wrote them.
_CLAIM_SQL = text(
    f"""
    INSERT INTO {OWN_SCHEMA}.booking_reminders AS ledger (booking_id, kind, event_date, run_id, recorded_at)
    SELECT due.booking_id, :kind, due.event_date, :run_id,
           greatest(:now, (SELECT max(earlier.recorded_at) + interval '1 microsecond'
                           FROM {OWN_SCHEMA}.booking_reminders AS earlier
                           WHERE earlier.booking_id = due.booking_id AND earlier.kind = :kind))
    FROM unnest(CAST(:booking_ids AS uuid[]), CAST(:event_dates AS timestamptz[])) AS due (booking_id, event_date)
    ON CONFLICT (booking_id, kind, event_date) DO UPDATE
        SET run_id = excluded.run_id, recorded_at = excluded.recorded_at
        WHERE EXISTS (SELECT FROM {OWN_SCHEMA}.booking_reminders AS newer
                      WHERE newer.booking_id = ledger.booking_id AND newer.kind = ledger.kind
                        AND newer.recorded_at > ledger.recorded_at)
    RETURNING booking_id
    """  # noqa: S608 - formatted from OWN_SCHEMA only; every value is a bind parameter
).bindparams(
    bindparam("kind", type_=Text),
    bindparam("run_id", type_=PG_UUID(as_uuid=True)),
    bindparam("now", type_=DateTime(timezone=True)),
)


async def claim_reminders(
    conn: AsyncConnection, *, kind: str, due: Sequence[tuple[UUID, datetime]], run_id: UUID, now: datetime
) -> set[UUID]:
    """Record (booking, kind, event_date) as reminded; return the bookings this transaction won.

    The ledger's primary key is what makes a reminder happen once per event_date: a concurrent
    run that chose the same booking waits here for this transaction, then wins nothing. A date
    reminded before and since superseded by another (A -> B -> A) is won again, once.
    """
    if not due:
        return set()
    params = {
        "kind": kind,
        "run_id": run_id,
        "now": now,
        "booking_ids": [booking_id for booking_id, _ in due],
        "event_dates": [event_date for _, event_date in due],
    }
    return set((await conn.scalars(_CLAIM_SQL, params)).all())
