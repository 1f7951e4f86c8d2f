"""Alembic environment: migrations run on the connection the daemon hands over, never on their own."""

from __future__ import annotations

from alembic import context

from scheduler.db.tables import OWN_SCHEMA

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through the daemon (it migrates at start), not the alembic CLI")

context.configure(
    connection=connection,
    version_table_schema=OWN_SCHEMA,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
