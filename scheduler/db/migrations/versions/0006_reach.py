"""Suppressed addresses: email addresses Resend reported bounced or complained, phone numbers
Twilio reported opted out (21610). Kept as a SHA-256 of the normalised address (and a masked form
for operators), never the address itself. And the batch an email was last sent in when that
attempt may have reached Resend: the retry must be the same batch under the same key. And an
operator's override of the suppression for one message (`resend --force`).

Revision ID: 0006_reach
Revises: 0005_history
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_reach"
down_revision = "0005_history"
branch_labels = None
depends_on = None

SCHEMA = "flavor_scheduler"


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("address_hash", sa.Text, primary_key=True),  # sha256 hex of the lower-cased email / E.164 number
        sa.Column("address_kind", sa.Text, nullable=False),  # email | phone
        sa.Column("masked_address", sa.Text, nullable=False),  # j***@example.com, +61 4** *** 678
        sa.Column("reason", sa.Text, nullable=False),  # bounced | complained | opted_out
        sa.Column("source", sa.Text, nullable=False),  # resend_webhook | twilio_send | twilio_callback
        sa.Column("detail", sa.Text),  # the provider's code or bounce type
        sa.Column("provider_message_id", sa.Text),  # the message that told us
        sa.Column("suppressed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("address_kind IN ('email', 'phone')", name="suppressions_kind"),
        schema=SCHEMA,
    )
    op.add_column("deliveries", sa.Column("batch_key", sa.Text), schema=SCHEMA)
    # `resend --force` of a message skipped because its address is suppressed: this one goes anyway.
    op.add_column(
        "deliveries",
        sa.Column("suppression_overridden", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )
    op.create_index(
        "deliveries_batch",
        "deliveries",
        ["batch_key"],
        schema=SCHEMA,
        postgresql_where=sa.text("batch_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("deliveries_batch", "deliveries", schema=SCHEMA)
    op.drop_column("deliveries", "suppression_overridden", schema=SCHEMA)
    op.drop_column("deliveries", "batch_key", schema=SCHEMA)
    op.drop_table("suppressions", schema=SCHEMA)
