"""Writing down how each claimed message ended, as soon as it is known, and counting it: in the
outbox, in the metrics, and in the report of the run that sent it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import structlog

from scheduler import progress
from scheduler.clock import Clock
from scheduler.db import email_batches as email_batches_db
from scheduler.db import outbox_claims, outbox_owed, outbox_settling
from scheduler.db import suppressions as suppressions_db
from scheduler.db.database import Database
from scheduler.metrics import Metrics
from scheduler.notify.fallback import OPTED_OUT_CODE, falls_back_on_refusal
from scheduler.records import ClaimedDelivery
from scheduler.redact import mask_email, mask_phone
from scheduler.vocabulary import (
    REMINDER_KINDS,
    SUPPRESSED,
    AddressKind,
    Channel,
    MessageOutcome,
    MessageState,
    SuppressionReason,
)

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class DeliveryReport:
    """What one call to `deliver` achieved: how each message ended, and the errors to report."""

    states: Counter[MessageState] = field(default_factory=Counter)
    bookings_sent: set[UUID] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    sms_fallbacks: list[UUID] = field(default_factory=list)  # SMS deliveries owed by WhatsApp failures here

    @property
    def sent(self) -> int:
        return self.states[MessageState.SENT]

    def merge(self, other: DeliveryReport) -> None:
        """Add what another call to `deliver` achieved (a run that sends batch after batch)."""
        self.states.update(other.states)
        self.bookings_sent |= other.bookings_sent
        self.errors += other.errors
        self.sms_fallbacks += other.sms_fallbacks

    @property
    def retrying(self) -> int:
        return self.states[MessageState.RETRYING]


def masked_address(delivery: ClaimedDelivery) -> str:
    address = delivery.message.to
    if not address:
        return "(no address)"
    return mask_email(address) if delivery.channel == Channel.EMAIL else mask_phone(address)


def describe(delivery: ClaimedDelivery) -> str:
    """`booking FE-1: whatsapp to client +61•••••••78`: how errors name a message."""
    recipient = f"{delivery.recipient_role} {masked_address(delivery)}"
    return f"booking {delivery.booking_reference}: {delivery.channel} to {recipient}"


class OutcomeRecorder:
    """Records outcomes of deliveries claimed by `claimer`, each in its own short transaction."""

    def __init__(self, db: Database, metrics: Metrics, clock: Clock, claimer: str, *, sms_fallback: bool) -> None:
        self._sms_fallback = sms_fallback  # TWILIO_SMS_FROM: a WhatsApp message refused for good goes as an SMS
        self._db = db
        self._metrics = metrics
        self._clock = clock
        self._claimer = claimer

    def _count(self, delivery: ClaimedDelivery, outcome: MessageOutcome) -> None:
        self._metrics.messages.labels(channel=delivery.channel, kind=delivery.kind, outcome=outcome).inc()

    def retried(self, delivery: ClaimedDelivery) -> None:
        """A transient failure about to be tried again (now or later)."""
        self._count(delivery, MessageOutcome.RETRIED)

    async def sent(
        self, delivery: ClaimedDelivery, report: DeliveryReport, provider_id: str | None, tries: int
    ) -> None:
        """Sent (provider_id None: the provider had it from an earlier attempt and did not say its id)."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            ours = await outbox_settling.mark_sent(
                conn, delivery.id, claimer=self._claimer, provider_id=provider_id, extra_attempts=tries - 1, now=now
            )
            if not ours:
                # Our claim ran out and another sender may have it: the message went out all the
                # same. Record it where nothing better is known; count it as ours no more.
                await outbox_settling.record_sent_unclaimed(conn, delivery.id, provider_id=provider_id, now=now)
        bound = log.bind(booking=delivery.booking_reference, channel=delivery.channel.value, provider_id=provider_id)
        if not ours:
            bound.warning("message_sent_without_claim", delivery_id=str(delivery.id))
            return
        self._counted_sent(delivery, report, provider_id)

    def _counted_sent(self, delivery: ClaimedDelivery, report: DeliveryReport, provider_id: str | None) -> None:
        log.info(
            "message_sent", booking=delivery.booking_reference, channel=delivery.channel.value,
            provider_id=provider_id, kind=delivery.kind.value, role=delivery.recipient_role.value,
            to=masked_address(delivery),
        )  # fmt: skip
        report.states[MessageState.SENT] += 1
        progress.count("sent")
        report.bookings_sent.add(delivery.booking_id)
        self._count(delivery, MessageOutcome.SENT)
        reminder = REMINDER_KINDS.get(delivery.kind)
        if reminder is not None:
            self._metrics.reminders_sent.labels(kind=reminder, channel=delivery.channel).inc()

    async def sent_batch(
        self, group: Sequence[ClaimedDelivery], report: DeliveryReport, provider_ids: Sequence[str | None], tries: int
    ) -> None:
        """Every member of a batch went out, each with its own provider id (None: Resend had the
        batch from an earlier try and did not say): one statement."""
        async with self._db.begin() as conn:
            ours = await email_batches_db.mark_batch_sent(
                conn, [(d.id, pid) for d, pid in zip(group, provider_ids, strict=True)],
                claimer=self._claimer, extra_attempts=tries - 1, now=self._clock.now(),
            )  # fmt: skip
        for delivery, provider_id in zip(group, provider_ids, strict=True):
            if delivery.id in ours:
                self._counted_sent(delivery, report, provider_id)
            else:
                log.warning(
                    "message_sent_without_claim", booking=delivery.booking_reference, channel=delivery.channel.value,
                    provider_id=provider_id, delivery_id=str(delivery.id),
                )  # fmt: skip

    async def failed_batch(
        self, group: Sequence[ClaimedDelivery], report: DeliveryReport, reason: str, tries: int
    ) -> None:
        """Every member of a batch failed for good, for the same reason: one statement."""
        async with self._db.begin() as conn:
            await email_batches_db.mark_batch_failed(
                conn, [d.id for d in group], claimer=self._claimer, reason=reason, extra_attempts=tries - 1,
                now=self._clock.now(),
            )  # fmt: skip
        progress.count("failed", len(group))
        for delivery in group:
            report.states[MessageState.FAILED] += 1
            report.errors.append(f"{describe(delivery)}: {reason}")
            self._count(delivery, MessageOutcome.FAILED)

    async def retry_batch_later(
        self,
        group: Sequence[ClaimedDelivery],
        report: DeliveryReport,
        reason: str,
        *,
        delay_seconds: float,
        batch_key: str | None,
        tries: int,
    ) -> None:
        """Leave a batch for a later run, each member an error naming when it is tried next; with
        `batch_key`, as this very batch (the attempt may have reached Resend)."""
        now = self._clock.now()
        next_attempt = now + timedelta(seconds=delay_seconds)
        async with self._db.begin() as conn:
            await email_batches_db.mark_batch_retry(
                conn, [d.id for d in group], claimer=self._claimer, reason=reason, next_attempt_at=next_attempt,
                batch_key=batch_key, extra_attempts=tries - 1, now=now,
            )  # fmt: skip
        progress.count("retrying", len(group))
        for delivery in group:
            report.states[MessageState.RETRYING] += 1
            report.errors.append(f"{describe(delivery)}: {reason}; retrying at {next_attempt:%Y-%m-%dT%H:%M:%SZ}")

    async def sending_batch(self, group: Sequence[ClaimedDelivery], key: str) -> None:
        """About to send a batch: its members keep its key until the answer is recorded."""
        async with self._db.begin() as conn:
            await email_batches_db.pin(conn, [d.id for d in group], key=key, claimer=self._claimer)

    async def hand_back_batch(self, group: Sequence[ClaimedDelivery], *, tried: bool) -> None:
        """Stopping before the batch was tried (again): owed again at once; as this batch only if an
        earlier try may have reached Resend."""
        ids = [d.id for d in group]
        async with self._db.begin() as conn:
            if not tried:
                await email_batches_db.unpin(conn, ids)
            await outbox_claims.release_unsent(conn, ids, claimer=self._claimer, now=self._clock.now())

    async def failed(
        self, delivery: ClaimedDelivery, report: DeliveryReport, reason: str, tries: int, *, code: str | None = None
    ) -> None:
        """Failed for good. Twilio's 21610 (the recipient opted out) also suppresses the number; a
        WhatsApp message refused with 63016 or 63003 is owed as an SMS, in the same transaction."""
        now = self._clock.now()
        fallback: list[UUID] = []
        async with self._db.begin() as conn:
            ours = await outbox_settling.mark_failed(
                conn, delivery.id, claimer=self._claimer, reason=reason, extra_attempts=tries - 1, now=now
            )
            if ours and self._sms_fallback and delivery.channel is Channel.WHATSAPP and falls_back_on_refusal(code):
                fallback = await outbox_owed.owe_sms_fallbacks(conn, [delivery.id], now=now)
            if code == OPTED_OUT_CODE and delivery.channel is not Channel.EMAIL and delivery.message.to:
                opted_out = suppressions_db.NewSuppression(
                    delivery.message.to,
                    AddressKind.PHONE,
                    SuppressionReason.OPTED_OUT,
                    source="twilio_send",
                    detail=code,
                )
                if await suppressions_db.suppress(conn, [opted_out], now=now):
                    log.info("address_suppressed", reason="opted_out", source="twilio_send",
                             channel=delivery.channel.value, to=masked_address(delivery))  # fmt: skip
        report.states[MessageState.FAILED] += 1
        progress.count("failed")
        report.errors.append(f"{describe(delivery)}: {reason}" + ("; sent as an SMS instead" if fallback else ""))
        self._count(delivery, MessageOutcome.FAILED)
        if fallback:
            report.sms_fallbacks += fallback
            log.info("sms_fallback_owed", booking=delivery.booking_reference, code=code, kind=delivery.kind.value,
                     to=masked_address(delivery))  # fmt: skip

    async def retry_later(
        self,
        delivery: ClaimedDelivery,
        report: DeliveryReport,
        reason: str,
        *,
        delay_seconds: float,
        ambiguous_since: datetime | None,
        tries: int,
    ) -> None:
        """Leave the message for a later run: an error of this run, naming when it is tried next."""
        now = self._clock.now()
        next_attempt = now + timedelta(seconds=delay_seconds)
        async with self._db.begin() as conn:
            await outbox_settling.mark_retry(
                conn,
                delivery.id,
                claimer=self._claimer,
                reason=reason,
                next_attempt_at=next_attempt,
                ambiguous_since=ambiguous_since,
                extra_attempts=tries - 1,
                now=now,
            )
        report.states[MessageState.RETRYING] += 1
        progress.count("retrying")
        report.errors.append(f"{describe(delivery)}: {reason}; retrying at {next_attempt:%Y-%m-%dT%H:%M:%SZ}")

    def suppressed(self, delivery: ClaimedDelivery, report: DeliveryReport) -> None:
        """To a suppressed address, so not sent (written by the claim): counted, logged, not an error."""
        report.states[MessageState.SKIPPED] += 1
        self._count(delivery, MessageOutcome.SKIPPED)
        log.info(
            "message_skipped", booking=delivery.booking_reference, channel=delivery.channel.value,
            kind=delivery.kind.value, reason=SUPPRESSED, to=masked_address(delivery),
        )  # fmt: skip

    def held(self, delivery: ClaimedDelivery, report: DeliveryReport, until: datetime | None) -> None:
        """Held for the quiet hours (written by the claim): counted, logged, not an error."""
        report.states[MessageState.HELD] += 1
        self._count(delivery, MessageOutcome.HELD)
        log.info(
            "message_held", booking=delivery.booking_reference, channel=delivery.channel.value,
            kind=delivery.kind.value, until=until.isoformat() if until else None,
        )  # fmt: skip

    def voided(self, delivery: ClaimedDelivery, report: DeliveryReport, reason: str) -> None:
        """No longer true, so not sent (written by the claim): counted, logged, not an error."""
        report.states[MessageState.VOID] += 1
        progress.count("void")
        self._count(delivery, MessageOutcome.VOID)
        log.info(
            "message_void", booking=delivery.booking_reference, channel=delivery.channel.value,
            kind=delivery.kind.value, reason=reason,
        )  # fmt: skip

    async def hand_back(self, delivery: ClaimedDelivery) -> None:
        """Stopping before the message was tried: it is owed again at once, as it was."""
        async with self._db.begin() as conn:
            await outbox_claims.release_unsent(conn, [delivery.id], claimer=self._claimer, now=self._clock.now())
