"""What a booking is owed: the in-app notices and the WhatsApp and email deliveries to record.

Planning is pure: it turns a booking and its contacts into rows. The job that owes the
messages writes those rows in the same transaction as the change that owes them, and the
dispatcher sends them after commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from scheduler.notify.content import Letters, Renderer
from scheduler.phones import InvalidPhoneNumber, to_e164
from scheduler.records import BookingRecord, Contact, InAppNotification, OwedDelivery
from scheduler.redact import mask_email, mask_phone
from scheduler.vocabulary import Channel, DeliveryStatus, MessageKind, Role

_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(slots=True)
class OwedMessages:
    """Rows to write for one or more bookings, and the problems found while planning them."""

    deliveries: list[OwedDelivery] = field(default_factory=list)
    notices: list[InAppNotification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def extend(self, other: OwedMessages) -> None:
        self.deliveries += other.deliveries
        self.notices += other.notices
        self.errors += other.errors

    def only_bookings(self, booking_ids: set[UUID]) -> OwedMessages:
        """The part owed to these bookings (those this transaction claimed)."""
        return OwedMessages(
            deliveries=[row for row in self.deliveries if row.booking_id in booking_ids],
            notices=[notice for notice in self.notices if notice.booking_id in booking_ids],
            errors=self.errors,
        )

    def settled(self, inserted: Iterable[UUID]) -> list[OwedDelivery]:
        """The inserted deliveries that were finished on recording: skipped (channel off) or failed."""
        ids = set(inserted)
        return [row for row in self.deliveries if row.id in ids and row.settled]


def dedupe_key(
    booking_id: UUID,
    kind: MessageKind,
    event_date: datetime | None,
    role: Role,
    channel: Channel,
    *,
    reminded_before: datetime | None = None,
) -> str:
    """One message per (booking, kind, event_date, recipient, channel): a reschedule owes anew.

    A reminder owed again for a date reminded before (A -> B -> A) names that earlier reminder
    (`reminded_before`, when the ledger recorded it): a new message, still one per such return.
    """
    when = event_date.isoformat() if event_date is not None else "-"
    key = f"{booking_id}:{kind}:{when}:{role}:{channel}"
    return key if reminded_before is None else f"{key}:after:{reminded_before.isoformat()}"


class MessagePlanner:
    """Decides who gets what for a booking, honouring contacts, preferences and channels."""

    def __init__(
        self,
        renderer: Renderer,
        *,
        enabled_channels: Iterable[Channel],
        content_sids: dict[MessageKind, str | None],
    ) -> None:
        self._renderer = renderer
        self._enabled = frozenset(enabled_channels)
        self._content_sids = content_sids

    def plan(
        self, kind: MessageKind, record: BookingRecord, roles: Iterable[Role], *, now: datetime, run_id: UUID
    ) -> OwedMessages:
        """Everything `kind` owes the booking's `roles`. Raises ContentError when no message can be written."""
        owed = OwedMessages()
        reference = record.facts.reference
        for role in roles:
            contact = record.client if role is Role.CLIENT else record.performer
            if contact is None:
                owed.errors.append(f"booking {reference}: {role} record is missing; {role} not notified")
                continue
            if kind is MessageKind.PAYMENT_REMINDER and not contact.wants_payment_reminders:
                continue
            letters = self._renderer.for_recipient(kind, role, record.facts, now)
            if contact.user_id is not None:
                notice = letters.in_app()
                owed.notices.append(
                    InAppNotification(
                        user_id=contact.user_id,
                        booking_id=record.id,
                        type=kind.value,
                        title=notice.title,
                        message=notice.message,
                    )
                )
            for channel in (Channel.WHATSAPP, Channel.EMAIL):
                owed.extend(
                    self._plan_channel(kind, record, role, contact, channel, letters=letters, now=now, run_id=run_id)
                )
        return owed

    def _plan_channel(
        self,
        kind: MessageKind,
        record: BookingRecord,
        role: Role,
        contact: Contact,
        channel: Channel,
        *,
        letters: Letters,
        now: datetime,
        run_id: UUID,
    ) -> OwedMessages:
        owed = OwedMessages()
        raw = contact.phone if channel is Channel.WHATSAPP else contact.email
        wanted = contact.wants_whatsapp if channel is Channel.WHATSAPP else contact.wants_email
        if raw is None or not raw.strip() or not wanted:
            return owed  # no address, or opted out: nothing owed, and nothing wrong
        reference = record.facts.reference
        address: str | None
        problem: str | None = None
        if channel is Channel.WHATSAPP:
            try:
                address = to_e164(raw)
            except InvalidPhoneNumber as exc:
                address, problem = None, f"invalid phone number {mask_phone(raw)} ({exc})"
        else:
            address = raw.strip()
            if not _EMAIL_SHAPE.fullmatch(address):
                address, problem = None, f"invalid email address {mask_email(raw.strip())}"

        rendered = letters.message(channel)
        content_sid = self._content_sids.get(kind) if channel is Channel.WHATSAPP else None
        if problem is not None:
            status = DeliveryStatus.FAILED
            owed.errors.append(f"booking {reference}: {channel} to {role}: {problem}")
        elif channel not in self._enabled:
            status, problem = DeliveryStatus.SKIPPED, f"{channel} channel is off (no credentials)"
        else:
            status = DeliveryStatus.PENDING
        owed.deliveries.append(
            OwedDelivery(
                id=uuid4(),
                dedupe_key=dedupe_key(record.id, kind, record.event_date, role, channel),
                booking_id=record.id,
                booking_reference=reference,
                kind=kind,
                event_date=record.event_date,
                recipient_role=role,
                channel=channel,
                address=address,
                subject=rendered.subject,
                body_text=rendered.text,
                body_html=rendered.html,
                content_sid=content_sid,
                content_variables=rendered.content_variables if content_sid else None,
                status=status,
                last_error=problem,
                run_id=run_id,
                created_at=now,
            )
        )
        return owed
