"""docs/platform-schema.md is the operator's reference for the platform tables: its DDL, run on a
real PostgreSQL, gives exactly the tables, columns, types and defaults of scheduler/db/tables.py."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from scheduler.db.engine import create_engine
from scheduler.db.platform import PlatformTables, inspect_platform
from scheduler.db.tables import OPTIONAL_TABLES, REQUIRED_TABLES
from tests.database import DatabaseFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "platform-schema.md"
# The daemon never reads otp_codes.id (it deletes by expires_at): the platform's type is whatever it is.
ANY_TYPE = {("otp_codes", "id")}

_COLUMNS_SQL = text(
    """
    SELECT c.relname AS table_name, a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS type,
           a.atthasdef AS has_default
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = 'public' AND c.relkind = 'r'
    """
)


def _statements() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1, "one sql block"
    script = "\n".join(line.split("--", 1)[0] for line in blocks[0].splitlines())
    return [statement.strip() for statement in script.split(";") if statement.strip()]


async def test_the_documented_ddl_is_what_the_code_uses(test_databases: DatabaseFactory) -> None:
    url = await test_databases.create(migrated=False)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for statement in _statements():
                await conn.execute(text(statement))
            found: dict[str, dict[str, tuple[str, bool]]] = {}
            for row in await conn.execute(_COLUMNS_SQL):
                found.setdefault(row.table_name, {})[row.column_name] = (row.type, row.has_default)
            tables = PlatformTables()
            await inspect_platform(conn, tables)  # the daemon accepts the documented schema as it stands
    finally:
        await engine.dispose()
        await test_databases.drop(url)

    assert tables.optional_present == {table.name for table in OPTIONAL_TABLES}
    expected = {table.name: table for table in (*REQUIRED_TABLES, *OPTIONAL_TABLES)}
    assert set(found) == set(expected)
    for name, table in expected.items():
        assert set(found[name]) == {column.name for column in table.columns}, name
        for column in table.columns:
            documented_type, has_default = found[name][column.name]
            if (name, column.name) not in ANY_TYPE:
                code_type = str(column.type.compile(dialect=postgresql.dialect())).lower()
                assert documented_type == code_type, f"{name}.{column.name}: {documented_type} != {code_type}"
            # A column the daemon leaves to the database's default (ids of the rows it inserts) has one.
            assert has_default == (column.server_default is not None), f"{name}.{column.name} default"


def test_the_page_says_which_tables_are_required() -> None:
    page = DOC.read_text(encoding="utf-8")
    for table in REQUIRED_TABLES:
        assert re.search(rf"^\| `{table.name}` \| yes \|", page, flags=re.MULTILINE), table.name
    for table in OPTIONAL_TABLES:
        assert re.search(rf"^\| `{table.name}` \| no \|", page, flags=re.MULTILINE), table.name


def test_the_readme_links_it() -> None:
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "(docs/platform-schema.md)" in readme
