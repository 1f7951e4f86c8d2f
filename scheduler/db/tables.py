"""Table definitions: the platform's tables (only the columns we rely on) and the daemon's own.

The platform tables are described, never created or altered here. The daemon's own tables
live in schema `flavor_scheduler` and are created by the Alembic migrations; these
definitions must match them.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    FetchedValue,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

OWN_SCHEMA = "flavor_scheduler"

platform = MetaData()

bookings = Table(
    "bookings",
    platform,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("booking_reference", Text),
    Column("client_id", UUID(as_uuid=True)),
    Column("performer_id", UUID(as_uuid=True)),
    Column("event_type", Text),
    Column("event_date", DateTime(timezone=True)),
    Column("duration_hours", Numeric),
    Column("guest_count", Integer),
    Column("venue_address", Text),
    Column("special_requirements", Text),
    Column("total_amount", Numeric),
    Column("deposit_amount", Numeric),
    Column("status", Text),
    Column("payment_status", Text),
    Column("payment_method", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

clients = Table(
    "clients",
    platform,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True)),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("email", Text),
    Column("phone", Text),
)

performers = Table(
    "performers",
    platform,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True)),
    Column("stage_name", Text),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("email", Text),
    Column("phone", Text),
)

notifications = Table(
    "notifications",
    platform,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),  # gen_random_uuid()
    Column("user_id", UUID(as_uuid=True)),
    Column("booking_id", UUID(as_uuid=True)),
    Column("type", Text),
    Column("title", Text),
    Column("message", Text),
    Column("is_read", Boolean),
    Column("created_at", DateTime(timezone=True)),
)

otp_codes = Table(
    "otp_codes",
    platform,
    Column("id", Text, primary_key=True, server_default=FetchedValue()),  # its type is the platform's; never read
    Column("expires_at", DateTime(timezone=True)),
)

audit_logs = Table(
    "audit_logs",
    platform,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),  # gen_random_uuid()
    Column("event_type", Text),
    Column("action", Text),
    Column("details", JSONB),
    Column("booking_id", UUID(as_uuid=True)),
    Column("timestamp", DateTime(timezone=True)),
)

notification_preferences = Table(
    "notification_preferences",
    platform,
    Column("user_id", UUID(as_uuid=True)),
    Column("email_notifications", Boolean),
    Column("sms_notifications", Boolean),
    Column("payment_reminders", Boolean),
)

REQUIRED_TABLES: tuple[Table, ...] = (bookings, clients, performers, notifications)
OPTIONAL_TABLES: tuple[Table, ...] = (otp_codes, audit_logs, notification_preferences)


own = MetaData(schema=OWN_SCHEMA)

installation = Table(
    "installation",
    own,
    Column("id", Integer, primary_key=True),  # always 1: a single row
    Column("installed_at", DateTime(timezone=True), nullable=False),
)

job_runs = Table(
    "job_runs",
    own,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("slot", Text),  # the scheduled fire this run is for; NULL for manual runs
    Column("scheduled_for", DateTime(timezone=True)),
    Column("trigger", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("replica_id", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("counts", JSONB),
    Column("errors", JSONB),
)

booking_reminders = Table(
    "booking_reminders",
    own,
    Column("booking_id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("event_date", DateTime(timezone=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

deliveries = Table(
    "deliveries",
    own,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("dedupe_key", Text, nullable=False, unique=True),
    Column("booking_id", UUID(as_uuid=True), nullable=False),
    Column("booking_reference", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("event_date", DateTime(timezone=True)),
    Column("recipient_role", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("address", Text),
    Column("subject", Text),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text),
    Column("content_sid", Text),
    Column("content_variables", JSONB),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("claimed_by", Text),
    Column("ambiguous_since", DateTime(timezone=True)),
    Column("provider_message_id", Text),
    Column("last_error", Text),
    Column("provider_status", Text),
    Column("provider_error_code", Text),
    Column("provider_status_at", DateTime(timezone=True)),
    Column("run_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("first_failed_at", DateTime(timezone=True)),  # the first transient failure: retries end by time
    # The Resend batch (its Idempotency-Key) of an attempt that may have reached Resend: retried as is.
    Column("batch_key", Text),
    # `resend --force` of a message to a suppressed address: sent all the same.
    Column("suppression_overridden", Boolean, nullable=False, server_default=FetchedValue()),  # false
)

job_pauses = Table(
    "job_pauses",
    own,
    Column("job_name", Text, primary_key=True),
    Column("reason", Text),
    Column("paused_by", Text, nullable=False),
    Column("paused_at", DateTime(timezone=True), nullable=False, server_default=FetchedValue()),  # now()
)

suppressions = Table(
    "suppressions",
    own,
    Column("address_hash", Text, primary_key=True),  # sha256 hex of the normalised address
    Column("address_kind", Text, nullable=False),  # email | phone
    Column("masked_address", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("detail", Text),
    Column("provider_message_id", Text),
    Column("suppressed_at", DateTime(timezone=True), nullable=False),
)
