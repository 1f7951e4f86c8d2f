"""Queries on the platform's bookings: cancelling stale ones, finding due reminders, and what
the messages about a booking need to know (its client, its performer, their preferences)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    DateTime,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    not_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.engine import bound_idle_in_transaction
from scheduler.db.errors import describe_db_error
from scheduler.db.tables import (
    OWN_SCHEMA,
    audit_logs,
    booking_reminders,
    bookings,
    clients,
    notification_preferences,
    notifications,
    performers,
)
from scheduler.records import AuditEntry, BookingFacts, BookingRecord, Contact, InAppNotification

ACTIVE_STATUSES = ("confirmed", "in_progress")


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
    await bound_idle_in_transaction(conn)  # the rows locked below must not outlive us
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
        .values(status="cancelled", updated_at=now)
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


def _records_query(with_preferences: bool) -> Select[Any]:
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


def _record(row: Any, with_preferences: bool) -> BookingRecord:
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
    statement = _records_query(with_preferences).where(bookings.c.id.in_(ids)).order_by(bookings.c.created_at)
    return [_record(row, with_preferences) for row in await conn.execute(statement)]


# --- reminders -------------------------------------------------------------------------------


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
            bookings.c.payment_status == "deposit_paid",
            (bookings.c.total_amount - func.coalesce(bookings.c.deposit_amount, 0)) > 0,
        ]
    excluded = list(exclude)
    if excluded:
        conditions.append(bookings.c.id.not_in(excluded))
    statement = (
        _records_query(with_preferences)
        .add_columns(reminded_before)
        .where(*conditions)
        .order_by(bookings.c.event_date, bookings.c.id)
        .limit(limit)
    )
    return [DueReminder(_record(row, with_preferences), row.reminded_before) for row in await conn.execute(statement)]


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
    await bound_idle_in_transaction(conn)  # the ledger keys inserted below must not outlive us
    params = {
        "kind": kind,
        "run_id": run_id,
        "now": now,
        "booking_ids": [booking_id for booking_id, _ in due],
        "event_dates": [event_date for _, event_date in due],
    }
    return set((await conn.scalars(_CLAIM_SQL, params)).all())


# --- the platform's own records of what we did ----------------------------------------------


# SQLSTATE classes of a row the database refuses: a data exception (22), a constraint (23), a
# trigger's RAISE (P0, 09, 27, 38, 39), a policy (44), a privilege or a column it lacks (42).
# The row fails alone. Any other failure (the connection, a timeout, a deadlock) is the
# database's and fails the transaction, as before.
_REFUSED_ROW_CLASSES = frozenset({"09", "22", "23", "27", "2F", "38", "39", "42", "44", "P0"})


def _refuses_the_row(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return not exc.connection_invalidated and isinstance(sqlstate, str) and sqlstate[:2] in _REFUSED_ROW_CLASSES


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """A platform row the database would not take: which booking it was about, and why."""

    table: str
    position: int  # in the rows given
    booking_id: UUID | None
    reason: str  # one line, no statement, no parameters

    @property
    def what(self) -> str:
        return _ROW_NAMES.get(self.table, "row")


_ROW_NAMES = {"notifications": "in-app notice", "audit_logs": "audit row"}


async def _insert_each_alone(conn: AsyncConnection, table: Table, values: list[dict[str, Any]]) -> list[RefusedRow]:
    """Insert `values` in one statement; when the database refuses it, find the rows it refuses.

    The good case is one INSERT (inside a savepoint, so a refusal does not abort the caller's
    transaction). After a refusal each row is tried in a savepoint of its own; those refused
    are returned, the others are written. A failure that is not a refusal is raised.
    """
    if not values:
        return []
    try:
        async with conn.begin_nested():
            await conn.execute(table.insert(), values)
    except DBAPIError as exc:
        if not _refuses_the_row(exc):
            raise
    else:
        return []
    refused: list[RefusedRow] = []
    for position, value in enumerate(values):
        try:
            async with conn.begin_nested():
                await conn.execute(table.insert(), [value])
        except DBAPIError as exc:
            if not _refuses_the_row(exc):
                raise
            refused.append(RefusedRow(table.name, position, value["booking_id"], describe_db_error(exc)))
    return refused


async def insert_notifications(
    conn: AsyncConnection, rows: Sequence[InAppNotification], *, now: datetime
) -> list[RefusedRow]:
    """The platform's in-app notifications, in one statement; returns those the database
    refused (an unknown NOT NULL column, a trigger), with the reason; the rest are written."""
    values = [
        {
            "user_id": row.user_id,
            "booking_id": row.booking_id,
            "type": row.type,
            "title": row.title,
            "message": row.message,
            "is_read": False,
            "created_at": now,
        }
        for row in rows
    ]
    return await _insert_each_alone(conn, notifications, values)


async def insert_audit_entries(conn: AsyncConnection, rows: Sequence[AuditEntry], *, now: datetime) -> list[RefusedRow]:
    """Rows of the platform's audit log, in one statement; returns those the database refused,
    with the reason; the rest are written."""
    values = [
        {
            "event_type": row.event_type,
            "action": row.action,
            "booking_id": row.booking_id,
            "details": row.details,
            "timestamp": now,
        }
        for row in rows
    ]
    return await _insert_each_alone(conn, audit_logs, values)
