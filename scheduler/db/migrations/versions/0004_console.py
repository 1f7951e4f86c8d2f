"""Indexes for the operator's console: each of its queries reads a few index pages, never the
whole history (100,000 runs and 1,000,000 messages answer in milliseconds).

Revision ID: 0004_console
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_console"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"

# name, table, columns, partial-index condition, columns carried along (for index-only scans)
_INDEXES: tuple[tuple[str, str, list[str], str | None, list[str]], ...] = (
    # `runs`: newest first across every job; `--failed` alone; `status`: the runs in progress.
    ("job_runs_newest", "job_runs", ["started_at", "id"], None, []),
    ("job_runs_failed", "job_runs", ["started_at", "id"], "status IN ('partial', 'error')", []),
    ("job_runs_running", "job_runs", ["job_name"], "status = 'running'", []),
    # `messages`: newest first, alone, by status (the channel carried along: `status` counts the
    # day's settled messages per channel from this index alone), by booking; the unfinished backlog.
    ("deliveries_newest", "deliveries", ["created_at", "id"], None, []),
    ("deliveries_by_status", "deliveries", ["status", "created_at", "id"], None, ["channel"]),
    ("deliveries_by_booking", "deliveries", ["booking_reference", "created_at"], None, []),
    ("deliveries_backlog", "deliveries", ["channel", "status"], "status IN ('pending', 'held', 'sending')", []),
)


def upgrade() -> None:
    for name, table, columns, where, include in _INDEXES:
        op.create_index(
            name,
            table,
            columns,
            schema=SCHEMA,
            postgresql_where=sa.text(where) if where is not None else None,
            postgresql_include=include,
        )


def downgrade() -> None:
    for name, table, *_ in reversed(_INDEXES):
        op.drop_index(name, table, schema=SCHEMA)
