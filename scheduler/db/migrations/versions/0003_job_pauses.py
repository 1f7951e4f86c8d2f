"""Jobs can be paused by an operator: kept in the database, so every replica honours it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"


def upgrade() -> None:
    op.create_table(
        "job_pauses",
        sa.Column("job_name", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text),
        sa.Column("paused_by", sa.Text, nullable=False),  # user@host of the operator's command
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("job_pauses", schema=SCHEMA)
