"""The console's reads of the messages owed: the backlog (`status`), the list (`messages`), and
one booking's whole trail: the booking as it stands, its reminders, messages, notices and audit.

Kept apart from the run history's reads (`console_queries.py`) and the operator's changes
(`console_changes.py`), which lock and show messages as the rows defined here. Each statement
reads a range of an index of migration 0004_console (by status, by booking, the backlog), never
the whole table; plain SQL on the console's asyncpg connection (see `console_sql.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from scheduler.db.console_sql import SCHEMA as _S
from scheduler.db.console_sql import Where, from_json

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A delivery (one message to one recipient on one channel); `address` is as stored: mask it."""

    id: UUID
    booking_reference: str
    kind: str
    role: str
    channel: str
    address: str | None
    status: str
    reason: str | None
    attempts: int
    provider_id: str | None
    provider_status: str | None
    provider_error_code: str | None
    event_date: datetime | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    first_failed_at: datetime | None
    provider_status_at: datetime | None
    claimed_by: str | None


@dataclass(frozen=True, slots=True)
class BookingRow:
    id: UUID
    reference: str
    status: str | None
    payment_status: str | None
    event_date: datetime | None


@dataclass(frozen=True, slots=True)
class ReminderRow:
    """A row of the reminder ledger: the booking was reminded (`kind`) for this event date."""

    kind: str
    event_date: datetime
    recorded_at: datetime
    run_id: UUID | None


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """An in-app notification of the platform about the booking."""

    type: str | None
    role: str | None
    title: str | None
    is_read: bool | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    event_type: str | None
    action: str | None
    details: dict[str, Any]
    at: datetime | None


@dataclass(frozen=True, slots=True)
class BookingTrail:
    """Everything about one booking's messages: the booking as it stands, the reminders it was owed
    (per event date), its messages, its in-app notices and its audit rows, oldest first."""

    reference: str
    booking: BookingRow | None
    reminders: list[ReminderRow]
    messages: list[MessageRow]
    notices: list[NoticeRow]
    audit: list[AuditRow]


# Unfinished messages all told (a partial index: they are few), settled ones since `since`
# (a range per status of the by-status index, which carries the channel: no table pages read).
_BACKLOG_SQL = f"""
    SELECT channel, status, count(*) AS n FROM {_S}.deliveries
    WHERE status IN ('pending', 'held', 'sending') GROUP BY channel, status
    UNION ALL
    SELECT channel, status, count(*) AS n FROM {_S}.deliveries
    WHERE status IN ('sent', 'failed', 'skipped', 'void') AND created_at >= $1 GROUP BY channel, status
"""


async def message_backlog(conn: asyncpg.Connection, *, since: datetime) -> dict[str, dict[str, int]]:
    """`{channel: {status: count}}`: every unfinished message, and those settled that were owed since `since`."""
    counts: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(_BACKLOG_SQL, since):
        counts.setdefault(row["channel"], {})[row["status"]] = int(row["n"])
    return counts


MESSAGE_COLUMNS = """
    id, booking_reference, kind, recipient_role, channel, address, status, last_error, attempts,
    provider_message_id, provider_status, provider_error_code, event_date, created_at, updated_at,
    next_attempt_at, sent_at, first_failed_at, provider_status_at, claimed_by
"""


def message_row(row: asyncpg.Record) -> MessageRow:
    return MessageRow(
        id=row["id"],
        booking_reference=row["booking_reference"],
        kind=row["kind"],
        role=row["recipient_role"],
        channel=row["channel"],
        address=row["address"],
        status=row["status"],
        reason=row["last_error"],
        attempts=row["attempts"],
        provider_id=row["provider_message_id"],
        provider_status=row["provider_status"],
        provider_error_code=row["provider_error_code"],
        event_date=row["event_date"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        first_failed_at=row["first_failed_at"],
        provider_status_at=row["provider_status_at"],
        claimed_by=row["claimed_by"],
    )


async def list_messages(
    conn: asyncpg.Connection,
    *,
    booking: str | None,
    status: str | None,
    channel: str | None,
    since: datetime | None,
    limit: int,
) -> list[MessageRow]:
    """Messages owed, newest first, filtered by booking reference, status, channel and age."""
    where = Where("true")
    for column, value in (("booking_reference", booking), ("status", status), ("channel", channel)):
        where.equal(column, value)
    where.since("created_at", since)
    at_most = where.bind(limit)
    sql = (
        f"SELECT {MESSAGE_COLUMNS} FROM {_S}.deliveries WHERE {where.sql} "
        f"ORDER BY created_at DESC, id DESC LIMIT {at_most}"
    )
    return [message_row(row) for row in await conn.fetch(sql, *where.params)]


_BOOKING_SQL = (
    "SELECT id, booking_reference, status, payment_status, event_date FROM bookings WHERE booking_reference = $1"
)
_BOOKING_MESSAGES_SQL = (
    f"SELECT {MESSAGE_COLUMNS}, booking_id FROM {_S}.deliveries WHERE booking_reference = $1 ORDER BY created_at, id"
)
_REMINDERS_SQL = (
    f"SELECT kind, event_date, recorded_at, run_id FROM {_S}.booking_reminders WHERE booking_id = $1 "
    "ORDER BY recorded_at, kind"
)
# The notices' recipients: the booking's client or performer, by their user id.
_NOTICES_SQL = """
    SELECT n.type, n.title, n.is_read, n.created_at,
           CASE WHEN n.user_id = c.user_id THEN 'client' WHEN n.user_id = p.user_id THEN 'performer' END AS role
    FROM notifications AS n
    LEFT JOIN bookings AS b ON b.id = n.booking_id
    LEFT JOIN clients AS c ON c.id = b.client_id
    LEFT JOIN performers AS p ON p.id = b.performer_id
    WHERE n.booking_id = $1
    ORDER BY n.created_at
"""
_AUDIT_SQL = (
    'SELECT event_type, action, details, "timestamp" FROM audit_logs WHERE booking_id = $1 ORDER BY "timestamp"'
)


async def booking_trail(conn: asyncpg.Connection, reference: str) -> BookingTrail:
    """One booking's whole trail. Found by reference in the platform's bookings (a unique index
    there), else through its messages (a booking deleted since)."""
    row = await conn.fetchrow(_BOOKING_SQL, reference)
    booking = (
        BookingRow(row["id"], row["booking_reference"], row["status"], row["payment_status"], row["event_date"])
        if row
        else None
    )
    message_rows = await conn.fetch(_BOOKING_MESSAGES_SQL, reference)
    booking_id = booking.id if booking else (message_rows[0]["booking_id"] if message_rows else None)
    reminders: list[ReminderRow] = []
    notices: list[NoticeRow] = []
    audit: list[AuditRow] = []
    if booking_id is not None:
        reminders = [
            ReminderRow(r["kind"], r["event_date"], r["recorded_at"], r["run_id"])
            for r in await conn.fetch(_REMINDERS_SQL, booking_id)
        ]
        notices = [
            NoticeRow(r["type"], r["role"], r["title"], r["is_read"], r["created_at"])
            for r in await conn.fetch(_NOTICES_SQL, booking_id)
        ]
        if await conn.fetchval("SELECT to_regclass('audit_logs') IS NOT NULL"):
            audit = [
                AuditRow(r["event_type"], r["action"], dict(from_json(r["details"]) or {}), r["timestamp"])
                for r in await conn.fetch(_AUDIT_SQL, booking_id)
            ]
    return BookingTrail(reference, booking, reminders, [message_row(r) for r in message_rows], notices, audit)
