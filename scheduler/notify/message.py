"""The vocabulary shared by the outbox, the dispatcher and every transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class Channel(StrEnum):
    WHATSAPP = "whatsapp"
    EMAIL = "email"


class MessageKind(StrEnum):
    BOOKING_REMINDER = "booking_reminder"
    PAYMENT_REMINDER = "payment_reminder"
    BOOKING_CANCELLED = "booking_cancelled"


class Role(StrEnum):
    CLIENT = "client"
    PERFORMER = "performer"


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
