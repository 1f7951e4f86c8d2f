"""The records passed between layers: a booking as messages see it, what a job owes, what a
sender holds. Plain typed data on the ground floor, so no layer has to import another's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from scheduler.vocabulary import Channel, DeliveryStatus, MessageKind, Role


@dataclass(frozen=True, slots=True)
class BookingFacts:
    """What a message may say about one booking, as read from the platform's tables."""

    reference: str
    event_type: str | None
    event_date: datetime | None  # aware, UTC
    duration_hours: Decimal | None
    venue: str | None
    total_amount: Decimal | None
    deposit_amount: Decimal | None
    client_first_name: str | None
    client_last_name: str | None
    performer_stage_name: str | None
    performer_first_name: str | None

    @property
    def balance(self) -> Decimal | None:
        if self.total_amount is None or self.deposit_amount is None:
            return None
        return self.total_amount - self.deposit_amount


@dataclass(frozen=True, slots=True)
class Contact:
    """A client or performer as far as messages are concerned, preferences applied."""

    user_id: UUID | None
    first_name: str | None
    phone: str | None
    email: str | None
    wants_email: bool = True
    wants_whatsapp: bool = True
    wants_payment_reminders: bool = True


@dataclass(frozen=True, slots=True)
class BookingRecord:
    """A booking with everything its messages need. A contact is None when its row is missing."""

    id: UUID
    event_date: datetime | None
    facts: BookingFacts
    client: Contact | None
    performer: Contact | None


@dataclass(frozen=True, slots=True)
class InAppNotification:
    """A row of the platform's `notifications` table."""

    user_id: UUID
    booking_id: UUID
    type: str
    title: str
    message: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A row of the platform's `audit_logs` table."""

    event_type: str
    action: str
    booking_id: UUID | None
    details: dict[str, Any]

    @classmethod
    def for_booking(cls, record: BookingRecord, action: str, **details: Any) -> AuditEntry:
        """A `booking` event about this booking; its details name the reference."""
        return cls("booking", action, record.id, {"reference": record.facts.reference, **details})


@dataclass(frozen=True, slots=True)
class OwedDelivery:
    """One message a job owes, as the outbox records it (a row of `deliveries`, typed).

    `dedupe_key` makes it owed once: one per (booking, kind, event_date, recipient, channel).
    """

    id: UUID
    dedupe_key: str
    booking_id: UUID
    booking_reference: str
    kind: MessageKind
    event_date: datetime | None
    recipient_role: Role
    channel: Channel
    address: str | None
    subject: str | None
    body_text: str
    body_html: str | None
    content_sid: str | None
    content_variables: dict[str, str] | None
    status: DeliveryStatus
    last_error: str | None
    run_id: UUID
    created_at: datetime

    @property
    def settled(self) -> bool:
        """Finished as it was recorded (skipped, or failed for a bad address): never claimed."""
        return self.status is not DeliveryStatus.PENDING


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready for a provider. `delivery_id` is stable across retries and processes."""

    delivery_id: UUID
    channel: Channel
    kind: MessageKind
    to: str  # E.164 phone number (WhatsApp) or email address
    booking_reference: str
    text: str  # WhatsApp body, or the email's plain-text part
    subject: str | None = None
    html: str | None = None
    content_sid: str | None = None  # an approved WhatsApp template replaces `text` when set
    content_variables: dict[str, str] = field(default_factory=dict)
    # Set when an earlier attempt may have reached the provider (timeout, dropped connection):
    # the transport looks for that message before sending again.
    ambiguous_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery this process holds the lease on: the message, and the outbox's bookkeeping."""

    message: OutgoingMessage
    booking_id: UUID
    recipient_role: Role
    attempts: int  # including this one
    created_at: datetime
    first_failed_at: datetime | None = None  # the first transient failure: retries end by time
    # The text written afresh at claim time, when an earlier attempt may have gone out with the
    # stored one (`message`): sent once the provider is known not to have that earlier one.
    rewritten: OutgoingMessage | None = None

    @property
    def id(self) -> UUID:
        return self.message.delivery_id

    @property
    def channel(self) -> Channel:
        return self.message.channel

    @property
    def kind(self) -> MessageKind:
        return self.message.kind

    @property
    def booking_reference(self) -> str:
        return self.message.booking_reference


@dataclass(frozen=True, slots=True)
class Fire:
    """Which scheduled fire a run is for: its slot is the key that makes it happen once."""

    slot: str
    scheduled_for: datetime
