"""Queries on the platform's bookings: cancelling stale ones, and what the messages about a booking
need to know (its client, its performer, their preferences). The reminder ledger is in
reminders.py, the in-app notices and audit rows in platform_rows.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Select,
    and_,
    case,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import (
    bookings,
    clients,
    notification_preferences,
    performers,
)
from scheduler.records import BookingFacts, BookingRecord, Contact

# The rules' words, one place each: reminders are owed (db/reminders.py) and stay true
# (db/validity.py) for these statuses; a balance reminder for this payment status.
ACTIVE_STATUSES = ("confirmed", "in_progress")
CANCELLED = "cancelled"
BALANCE_DUE_PAYMENT_STATUS = "deposit_paid"


# --- stale bookings ------------------------------------------------------------------------


def _stale(cutoff: datetime) -> Any:
    return and_(
        bookings.c.status == "pending",
        bookings.c.payment_status == "pending",
        bookings.c.created_at < cutoff,
    )


async def cancel_stale_bookings(conn: AsyncConnection, *, cutoff: datetime, now: datetime, limit: int) -> list[UUID]:
    """Cancel up to `limit` stale bookings and return their ids.

    The UPDATE repeats the staleness condition, so a booking whose deposit lands between the
    choice and the update is not cancelled; rows another transaction holds are skipped and
    left for the next run. The choice is a MATERIALIZED CTE, run exactly once: as an IN
    (subquery) the planner may rescan it per row (a nested-loop semi-join, chosen on a table
    without fresh statistics), and each rescan locks more rows, so one batch cancelled and
    locked every stale booking, not `limit`.
    """
    chosen = (
        select(bookings.c.id)
        .where(_stale(cutoff))
        .order_by(bookings.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("chosen")
        .prefix_with("MATERIALIZED")
    )
    statement = (
        update(bookings)
        .where(bookings.c.id == chosen.c.id, _stale(cutoff))
        .values(status=CANCELLED, updated_at=now)
        .returning(bookings.c.id)
    )
    return list((await conn.scalars(statement)).all())


async def find_stale_references(conn: AsyncConnection, *, cutoff: datetime) -> list[str]:
    """The references of the bookings a run would cancel now (the dry run)."""
    statement = (
        select(bookings.c.id, bookings.c.booking_reference).where(_stale(cutoff)).order_by(bookings.c.created_at)
    )
    return [row.booking_reference or str(row.id) for row in await conn.execute(statement)]


# --- what messages need ----------------------------------------------------------------------


# PostgreSQL's timestamptz reaches the year 294276, Python's datetime the year 9999: a later
# date (or 'infinity') would fail the whole batch's query as it is read. It is read as the last
# moment Python can hold, which the booking's messages then cannot represent in TIMEZONE (the
# booking fails alone); an earlier one (BC, '-infinity') as the first.
_LAST_MOMENT = "'9999-12-31 23:59:59.999999+00'::timestamptz"
_FIRST_MOMENT = "'0001-01-01 00:00:00+00'::timestamptz"


def _representable(column: Any) -> Any:
    return case(
        (column > literal_column(_LAST_MOMENT), literal_column(_LAST_MOMENT)),
        (column < literal_column(_FIRST_MOMENT), literal_column(_FIRST_MOMENT)),
        else_=column,
    )


def records_query(with_preferences: bool) -> Select[Any]:
    client_prefs = notification_preferences.alias("client_prefs")
    performer_prefs = notification_preferences.alias("performer_prefs")
    columns: list[Any] = [
        bookings.c.id,
        bookings.c.booking_reference,
        bookings.c.event_type,
        _representable(bookings.c.event_date).label("event_date"),
        bookings.c.duration_hours,
        bookings.c.venue_address,
        bookings.c.total_amount,
        bookings.c.deposit_amount,
        (clients.c.id.is_not(None)).label("client_exists"),
        clients.c.user_id.label("client_user_id"),
        clients.c.first_name.label("client_first_name"),
        clients.c.last_name.label("client_last_name"),
        clients.c.email.label("client_email"),
        clients.c.phone.label("client_phone"),
        (performers.c.id.is_not(None)).label("performer_exists"),
        performers.c.user_id.label("performer_user_id"),
        performers.c.stage_name.label("performer_stage_name"),
        performers.c.first_name.label("performer_first_name"),
        performers.c.email.label("performer_email"),
        performers.c.phone.label("performer_phone"),
    ]
    joined = bookings.outerjoin(clients, clients.c.id == bookings.c.client_id).outerjoin(
        performers, performers.c.id == bookings.c.performer_id
    )
    if with_preferences:
        for alias, prefix, user_id in (
            (client_prefs, "client", clients.c.user_id),
            (performer_prefs, "performer", performers.c.user_id),
        ):
            columns += [
                func.coalesce(alias.c.email_notifications, true()).label(f"{prefix}_wants_email"),
                func.coalesce(alias.c.sms_notifications, true()).label(f"{prefix}_wants_whatsapp"),
                func.coalesce(alias.c.payment_reminders, true()).label(f"{prefix}_wants_payment"),
            ]
            joined = joined.outerjoin(alias, alias.c.user_id == user_id)
    return select(*columns).select_from(joined)


def _contact(row: Any, prefix: str, with_preferences: bool) -> Contact | None:
    if not getattr(row, f"{prefix}_exists"):
        return None
    return Contact(
        user_id=getattr(row, f"{prefix}_user_id"),
        first_name=getattr(row, f"{prefix}_first_name"),
        phone=getattr(row, f"{prefix}_phone"),
        email=getattr(row, f"{prefix}_email"),
        wants_email=bool(getattr(row, f"{prefix}_wants_email")) if with_preferences else True,
        wants_whatsapp=bool(getattr(row, f"{prefix}_wants_whatsapp")) if with_preferences else True,
        wants_payment_reminders=bool(getattr(row, f"{prefix}_wants_payment")) if with_preferences else True,
    )


def to_record(row: Any, with_preferences: bool) -> BookingRecord:
    facts = BookingFacts(
        reference=row.booking_reference or str(row.id),
        event_type=row.event_type,
        event_date=row.event_date,
        duration_hours=row.duration_hours,
        venue=row.venue_address,
        total_amount=row.total_amount,
        deposit_amount=row.deposit_amount,
        client_first_name=row.client_first_name,
        client_last_name=row.client_last_name,
        performer_stage_name=row.performer_stage_name,
        performer_first_name=row.performer_first_name,
    )
    return BookingRecord(
        id=row.id,
        event_date=row.event_date,
        facts=facts,
        client=_contact(row, "client", with_preferences),
        performer=_contact(row, "performer", with_preferences),
    )


async def load_booking_records(
    conn: AsyncConnection, ids: Sequence[UUID], *, with_preferences: bool
) -> list[BookingRecord]:
    """The bookings with these ids, with their contacts, in one query."""
    if not ids:
        return []
    statement = records_query(with_preferences).where(bookings.c.id.in_(ids)).order_by(bookings.c.created_at)
    return [to_record(row, with_preferences) for row in await conn.execute(statement)]
