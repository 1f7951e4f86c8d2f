"""The migration head the daemon checks without Alembic is Alembic's own head."""

from scheduler.db import migrate


def test_head_constant_matches_the_migration_scripts() -> None:
    assert migrate.alembic_head() == migrate.HEAD_REVISION
