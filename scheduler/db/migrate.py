"""Bringing the daemon's own schema up to date, safely when several replicas start at once."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.tables import OWN_SCHEMA

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every replica. Transaction-scoped, so it
# is released at commit and is safe behind a transaction-mode pooler.
_MIGRATION_LOCK_KEY = 7_140_001


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision this version of the daemon knows."""
    head: str | None = ScriptDirectory.from_config(_config()).get_current_head()
    return head


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": OWN_SCHEMA})
    current: str | None = context.get_current_revision()
    return current


async def upgrade(engine: AsyncEngine) -> None:
    """Create or upgrade schema `flavor_scheduler` to the head revision, in one transaction."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{OWN_SCHEMA}"'))
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), "head"))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when the schema was never migrated."""
    async with engine.connect() as conn:
        exists = await conn.scalar(
            text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{OWN_SCHEMA}.alembic_version"}
        )
        if not exists:
            return None
        return await conn.run_sync(_current)
