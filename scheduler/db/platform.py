"""Which of the platform's tables exist, checked once at start."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OPTIONAL_TABLES, REQUIRED_TABLES, audit_logs, notifications

# The platform tables the daemon inserts rows into (`bookings` it only updates, which no NOT
# NULL column can make fail). It fills every column tables.py lists for them except those the
# platform fills by default (the ids): a NOT NULL column without a default outside these makes
# every row refused.
INSERTED_TABLES = (notifications, audit_logs)


class PlatformSchemaError(Exception):
    """A required platform table or column is missing; the message names it."""


class PlatformTables:
    """The optional tables present in this database (the required ones always are).

    Built by the app before the database answers, as if every table existed; `inspect_platform`
    fills in what it found at start, and every holder of this object sees it.
    """

    def __init__(self, optional_present: frozenset[str] | None = None) -> None:
        self.optional_present = (
            optional_present if optional_present is not None else frozenset(t.name for t in OPTIONAL_TABLES)
        )
        # Per table the daemon inserts into: its NOT NULL columns without a default that the
        # daemon does not fill (each row written there is refused; `--check` fails naming them).
        self.unfilled: dict[str, tuple[str, ...]] = {}

    def has(self, table: str) -> bool:
        return table in self.optional_present

    def missing(self, tables: Iterable[str]) -> list[str]:
        """Those of `tables` that do not exist (only optional tables can be missing)."""
        return [table for table in tables if not self.has(table)]


_COLUMNS_SQL = text(
    """
    SELECT c.relname AS table_name, a.attname AS column_name,
           a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' AS needs_a_value
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p', 'v', 'f') AND c.relname = ANY(:names) AND pg_catalog.pg_table_is_visible(c.oid)
    ORDER BY a.attnum
    """
)


async def inspect_platform(conn: AsyncConnection, tables: PlatformTables) -> None:
    """Check the platform's tables and columns, noting in `tables` which optional ones exist and
    which NOT NULL columns the daemon's inserts leave empty; raise PlatformSchemaError naming
    what is missing."""
    wanted = [table.name for table in (*REQUIRED_TABLES, *OPTIONAL_TABLES)]
    found: dict[str, set[str]] = {}
    need_a_value: dict[str, list[str]] = {}
    for row in await conn.execute(_COLUMNS_SQL, {"names": wanted}):
        found.setdefault(row.table_name, set()).add(row.column_name)
        if row.needs_a_value:
            need_a_value.setdefault(row.table_name, []).append(row.column_name)

    problems: list[str] = []
    for table in REQUIRED_TABLES:
        if table.name not in found:
            problems.append(f"required table {table.name!r} does not exist")
            continue
        missing = [column.name for column in table.columns if column.name not in found[table.name]]
        if missing:
            problems.append(f"table {table.name!r} lacks column(s) {', '.join(missing)}")
    present = set()
    for table in OPTIONAL_TABLES:
        if table.name not in found:
            continue
        missing = [column.name for column in table.columns if column.name not in found[table.name]]
        if missing:
            problems.append(f"table {table.name!r} lacks column(s) {', '.join(missing)}")
        present.add(table.name)
    if problems:
        raise PlatformSchemaError("; ".join(problems))
    tables.optional_present = frozenset(present)
    tables.unfilled = {}
    for table in INSERTED_TABLES:
        filled = {column.name for column in table.columns if column.server_default is None}
        unfilled = tuple(column for column in need_a_value.get(table.name, []) if column not in filled)
        if unfilled:
            tables.unfilled[table.name] = unfilled
