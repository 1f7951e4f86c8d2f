"""The last finish of each job by status, found by an index lookup: every replica reads it every
half minute for the last-success and last-error gauges, however long the run history grows.

Revision ID: 0005_history
Revises: 0004_console
"""

from alembic import op

revision = "0005_history"
down_revision = "0004_console"
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"


def upgrade() -> None:
    op.create_index("job_runs_last_finish", "job_runs", ["job_name", "status", "finished_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("job_runs_last_finish", "job_runs", schema=SCHEMA)
