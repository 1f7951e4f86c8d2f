"""Bringing the daemon's own schema up to date, safely when several replicas start at once.

Alembic is imported only when there is something to migrate: on an up-to-date database (every
start but the first after an upgrade) a plain query of the version table is enough, and the
daemon stays ~10 MB lighter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

from scheduler.db.database import Database
from scheduler.db.tables import OWN_SCHEMA

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

# The newest migration in migrations/versions; a test keeps it equal to Alembic's head.
HEAD_REVISION = "0006_reach"

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every replica. Transaction-scoped, so it
# is released at commit and is safe behind a transaction-mode pooler.
_MIGRATION_LOCK_KEY = 7_140_001
_VERSION_TABLE_SQL = text(f"SELECT to_regclass('{OWN_SCHEMA}.alembic_version') IS NOT NULL")
_VERSION_SQL = text(f"SELECT max(version_num) FROM {OWN_SCHEMA}.alembic_version")


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of the daemon knows."""
    return HEAD_REVISION


def alembic_head() -> str | None:
    """The head as Alembic computes it from the migration scripts (tests compare the two)."""
    from alembic.script import ScriptDirectory

    head: str | None = ScriptDirectory.from_config(_config()).get_current_head()
    return head


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when the schema was never migrated."""
    async with db.connect() as conn:
        if not await conn.scalar(_VERSION_TABLE_SQL):
            return None
        revision: str | None = await conn.scalar(_VERSION_SQL)
        return revision


async def upgrade(db: Database) -> None:
    """Create or upgrade schema `flavor_scheduler` to the head revision, in one transaction."""
    if await current_revision(db) == HEAD_REVISION:
        return
    from alembic import command

    async with db.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{OWN_SCHEMA}"'))
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), "head"))
