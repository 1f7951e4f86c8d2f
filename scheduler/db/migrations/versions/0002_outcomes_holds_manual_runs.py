"""Runs can end `partial`; a manual run never blocks a scheduled one (nor is blocked by it);
deliveries can be `held` (quiet hours) or `void` (no longer true), and remember when they first
failed, so retries are given up by time, not by count.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.drop_constraint("job_runs_status", "job_runs", schema=SCHEMA)
    op.create_check_constraint(
        "job_runs_status",
        "job_runs",
        "status IN ('running', 'success', 'partial', 'error', 'skipped', 'interrupted')",
        schema=SCHEMA,
    )
    # One run of a job at a time among the scheduled, caught-up, taken-over and HTTP runs; a
    # manual run (--run-once) always runs: the ledger and the outbox keep every item once.
    op.drop_index("job_runs_one_running", "job_runs", schema=SCHEMA)
    op.create_index(
        "job_runs_one_running",
        "job_runs",
        ["job_name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'running' AND NOT dry_run AND trigger <> 'manual'"),
    )

    op.drop_constraint("deliveries_status", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        "deliveries_status",
        "deliveries",
        "status IN ('pending', 'held', 'sending', 'sent', 'failed', 'skipped', 'void')",
        schema=SCHEMA,
    )
    op.drop_index("deliveries_unfinished", "deliveries", schema=SCHEMA)
    op.create_index(
        "deliveries_unfinished",
        "deliveries",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('pending', 'held', 'sending')"),
    )
    op.add_column("deliveries", sa.Column("first_failed_at", TZ), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("deliveries", "first_failed_at", schema=SCHEMA)
    op.execute(f"UPDATE {SCHEMA}.deliveries SET status = 'pending' WHERE status = 'held'")
    op.execute(f"UPDATE {SCHEMA}.deliveries SET status = 'skipped' WHERE status = 'void'")
    op.execute(f"UPDATE {SCHEMA}.job_runs SET status = 'error' WHERE status = 'partial'")
    op.drop_index("deliveries_unfinished", "deliveries", schema=SCHEMA)
    op.create_index(
        "deliveries_unfinished",
        "deliveries",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.drop_constraint("deliveries_status", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        "deliveries_status",
        "deliveries",
        "status IN ('pending', 'sending', 'sent', 'failed', 'skipped')",
        schema=SCHEMA,
    )
    op.drop_index("job_runs_one_running", "job_runs", schema=SCHEMA)
    op.create_index(
        "job_runs_one_running",
        "job_runs",
        ["job_name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'running' AND NOT dry_run"),
    )
    op.drop_constraint("job_runs_status", "job_runs", schema=SCHEMA)
    op.create_check_constraint(
        "job_runs_status",
        "job_runs",
        "status IN ('running', 'success', 'error', 'skipped', 'interrupted')",
        schema=SCHEMA,
    )
