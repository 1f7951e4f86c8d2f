"""The platform's own records of what the daemon did: in-app notifications and audit rows, written
set-based, and where the database refuses a row, that row alone fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Table,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.errors import describe_db_error
from scheduler.db.tables import (
    audit_logs,
    notifications,
)
from scheduler.records import AuditEntry, InAppNotification

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
