"""Which of the platform's tables exist, checked once at start."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OPTIONAL_TABLES, REQUIRED_TABLES


class PlatformSchemaError(Exception):
    """A required platform table or column is missing; the message names it."""


@dataclass(frozen=True, slots=True)
class PlatformTables:
    """The optional tables present in this database (the required ones always are)."""

    optional_present: frozenset[str]

    def has(self, table: str) -> bool:
        return table in self.optional_present

    @classmethod
    def everything(cls) -> PlatformTables:
        return cls(frozenset(table.name for table in OPTIONAL_TABLES))


_COLUMNS_SQL = text(
    """
    SELECT c.relname AS table_name, a.attname AS column_name
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p', 'v', 'f') AND c.relname = ANY(:names) AND pg_catalog.pg_table_is_visible(c.oid)
    """
)


async def inspect_platform(conn: AsyncConnection) -> PlatformTables:
    """Check the platform's tables and columns; raise PlatformSchemaError naming what is missing."""
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
    return PlatformTables(frozenset(present))
