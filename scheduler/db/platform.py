"""Which of the platform's tables exist, checked once at start."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OPTIONAL_TABLES, REQUIRED_TABLES


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

    def has(self, table: str) -> bool:
        return table in self.optional_present

    def missing(self, tables: Iterable[str]) -> list[str]:
        """Those of `tables` that do not exist (only optional tables can be missing)."""
        return [table for table in tables if not self.has(table)]


_COLUMNS_SQL = text(
    """
    SELECT c.relname AS table_name, a.attname AS column_name
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p', 'v', 'f') AND c.relname = ANY(:names) AND pg_catalog.pg_table_is_visible(c.oid)
    """
)


async def inspect_platform(conn: AsyncConnection, tables: PlatformTables) -> None:
    """Check the platform's tables and columns, noting in `tables` which optional ones exist;
    raise PlatformSchemaError naming what is missing."""
    wanted = [table.name for table in (*REQUIRED_TABLES, *OPTIONAL_TABLES)]
    found: dict[str, set[str]] = {}
    for row in await conn.execute(_COLUMNS_SQL, {"names": wanted}):
        found.setdefault(row.table_name, set()).add(row.column_name)

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
