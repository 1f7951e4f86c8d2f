"""The daemon's own schema: run history, reminder ledger, message deliveries, installation.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("installed_at", TZ, nullable=False),
        sa.CheckConstraint("id = 1", name="installation_single_row"),
        schema=SCHEMA,
    )
    op.create_table(
        "job_runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("job_name", sa.Text, nullable=False),
        sa.Column("slot", sa.Text),
        sa.Column("scheduled_for", TZ),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("replica_id", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("lease_expires_at", TZ),
        sa.Column("counts", JSONB),
        sa.Column("errors", JSONB),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'error', 'skipped', 'interrupted')", name="job_runs_status"
        ),
        schema=SCHEMA,
    )
    # One run per scheduled fire, across every replica.
    op.create_index("job_runs_one_per_slot", "job_runs", ["job_name", "slot"], unique=True, schema=SCHEMA)
    # At most one run of a job at a time, across every replica and trigger.
    op.create_index(
        "job_runs_one_running",
        "job_runs",
        ["job_name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'running' AND NOT dry_run"),
    )
    op.create_index("job_runs_history", "job_runs", ["job_name", "started_at"], schema=SCHEMA)

    op.create_table(
        "booking_reminders",
        sa.Column("booking_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("event_date", TZ, primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True)),
        sa.Column("recorded_at", TZ, nullable=False),
        schema=SCHEMA,
    )

    op.create_table(
        "deliveries",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
        sa.Column("booking_id", UUID(as_uuid=True), nullable=False),
        sa.Column("booking_reference", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("event_date", TZ),
        sa.Column("recipient_role", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("subject", sa.Text),
        sa.Column("body_text", sa.Text, nullable=False),
        sa.Column("body_html", sa.Text),
        sa.Column("content_sid", sa.Text),
        sa.Column("content_variables", JSONB),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TZ),
        sa.Column("lease_expires_at", TZ),
        sa.Column("claimed_by", sa.Text),
        sa.Column("ambiguous_since", TZ),
        sa.Column("provider_message_id", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("provider_status", sa.Text),
        sa.Column("provider_error_code", sa.Text),
        sa.Column("provider_status_at", TZ),
        sa.Column("run_id", UUID(as_uuid=True)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("sent_at", TZ),
        sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="deliveries_status"),
        schema=SCHEMA,
    )
    # What deliver_pending_messages scans: the unfinished deliveries, oldest first.
    op.create_index(
        "deliveries_unfinished",
        "deliveries",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index("deliveries_provider_id", "deliveries", ["provider_message_id"], schema=SCHEMA)
    op.create_index("deliveries_run", "deliveries", ["run_id"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("deliveries", "booking_reminders", "job_runs", "installation"):
        op.drop_table(table, schema=SCHEMA)
