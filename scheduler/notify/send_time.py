"""A claimed batch made ready to leave (CONTRACT §2), in the transaction that claimed it: what is
no longer true is void, what would wake people is held until the quiet hours end, and the rest
is written afresh from the booking as it stands, so that "in 23 hours", the date, the venue and
the amount are true when the message is sent.

The email's Idempotency-Key stays the delivery's id whatever the text: a key derived from the
payload would make a changed text a new email to Resend, so an earlier attempt whose answer was
lost (a timeout, a killed process) would be sent a second time. Under one key per delivery
Resend itself settles it: an earlier attempt it accepted makes it refuse the new text with 409
`invalid_idempotent_request`, which the transport reports as already sent (AlreadySentError);
one it never saw is sent, with today's text. WhatsApp has no key: the sender looks for the
stored text of the earlier attempt at Twilio first (`find_sent`), and only then stores and sends
the new one (`MessageSender._rewritten_once_clear` in notify/message_sender.py), so the stored
text is always that of the latest attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db import bookings as bookings_db
from scheduler.db import send_time as send_time_db
from scheduler.db import validity as validity_db
from scheduler.db.platform import PlatformTables
from scheduler.notify.content import ContentError, Renderer
from scheduler.quiet_hours import QuietHours
from scheduler.records import BookingRecord, ClaimedDelivery, OutgoingMessage

# A claim renders hundreds of messages while the channel's earlier sends are still going out:
# a pause this often keeps the loop from stalling them (about 5 ms of rendering).
_RENDERS_BETWEEN_YIELDS = 50


@dataclass(slots=True)
class Prepared:
    """A claimed batch sorted: to send now (their text fresh), void, held, or unwritable."""

    ready: list[ClaimedDelivery] = field(default_factory=list)
    voided: list[tuple[ClaimedDelivery, str]] = field(default_factory=list)
    held: list[ClaimedDelivery] = field(default_factory=list)
    held_until: datetime | None = None
    unwritable: list[tuple[ClaimedDelivery, str]] = field(default_factory=list)


class SendTime:
    """The send-time checks and rewriting, for one process's dispatcher."""

    def __init__(
        self,
        renderer: Renderer,
        *,
        tz: ZoneInfo,
        quiet: QuietHours | None,
        lead: timedelta,
        pickup: timedelta,
        tables: PlatformTables,
    ) -> None:
        self._renderer = renderer
        self._tz = tz
        self._quiet = quiet
        self._lead = lead  # REMINDER_MIN_LEAD_MINUTES: a reminder closer to its event than this is void
        self._pickup = pickup
        self._tables = tables

    def quiet_until(self, now: datetime) -> datetime | None:
        """The end of the quiet period `now` is in, or None when messages may go now."""
        return self._quiet.ends_after(now, self._tz) if self._quiet is not None else None

    async def prepare(
        self, conn: AsyncConnection, batch: Sequence[ClaimedDelivery], *, now: datetime, claimer: str
    ) -> Prepared:
        """Void, hold and rewrite the claimed `batch`: a constant number of statements for it."""
        prepared = Prepared()
        if not batch:
            return prepared
        with_preferences = self._tables.has("notification_preferences")
        voided = await validity_db.void_untrue(
            conn, [delivery.id for delivery in batch], now=now, lead=self._lead, with_preferences=with_preferences
        )
        prepared.voided = [(delivery, voided[delivery.id]) for delivery in batch if delivery.id in voided]
        rest = [delivery for delivery in batch if delivery.id not in voided]
        if not rest:
            return prepared
        records = {
            record.id: record
            for record in await bookings_db.load_booking_records(
                conn, sorted({delivery.booking_id for delivery in rest}), with_preferences=with_preferences
            )
        }
        until = self.quiet_until(now)
        if until is not None:
            prepared.held = [delivery for delivery in rest if self._may_wait(records.get(delivery.booking_id), until)]
            prepared.held_until = until
            local = until.astimezone(self._tz)
            await send_time_db.hold(
                conn,
                [delivery.id for delivery in prepared.held],
                claimer=claimer,
                until=until,
                reason=f"quiet hours: held until {local:%Y-%m-%d %H:%M} {self._tz.key}",
                now=now,
            )
            held = {delivery.id for delivery in prepared.held}
            rest = [delivery for delivery in rest if delivery.id not in held]
        changed: list[OutgoingMessage] = []
        for position, delivery in enumerate(rest, start=1):
            if position % _RENDERS_BETWEEN_YIELDS == 0:
                await asyncio.sleep(0)  # rendering is CPU work: the sends in flight go on meanwhile
            record = records.get(delivery.booking_id)
            try:
                fresh = self._rewritten(delivery.message, delivery, record, now)
            except (ContentError, ArithmeticError) as exc:
                detail = str(exc) if isinstance(exc, ContentError) else f"a value out of range ({type(exc).__name__})"
                prepared.unwritable.append((delivery, f"the message cannot be written now: {detail}"))
                continue
            if fresh == delivery.message:
                prepared.ready.append(delivery)
            elif delivery.message.ambiguous_since is not None:
                # An earlier attempt may have gone out with the stored text: the sender looks for
                # it at the provider before switching to the new one (see the module's docstring).
                prepared.ready.append(dataclasses.replace(delivery, rewritten=fresh))
            else:
                changed.append(fresh)
                prepared.ready.append(dataclasses.replace(delivery, message=fresh))
        await send_time_db.rewrite_content(conn, changed, claimer=claimer)
        return prepared

    def _may_wait(self, record: BookingRecord | None, until: datetime) -> bool:
        """Whether the message may wait for `until`: its event is still far enough away by then."""
        event_date = record.event_date if record is not None else None
        return event_date is None or event_date > until + self._lead + self._pickup

    def _rewritten(
        self, message: OutgoingMessage, delivery: ClaimedDelivery, record: BookingRecord | None, now: datetime
    ) -> OutgoingMessage:
        if record is None:  # the claim's check voids a message whose booking is gone
            return message
        rendered = self._renderer.render(delivery.kind, delivery.channel, delivery.recipient_role, record.facts, now)
        return dataclasses.replace(
            message,
            text=rendered.text,
            subject=rendered.subject,
            html=rendered.html,
            content_variables=rendered.content_variables if message.content_sid else {},
        )

    async def store(self, conn: AsyncConnection, message: OutgoingMessage, *, claimer: str) -> None:
        """Store one message's new text before it is sent (after an ambiguous earlier attempt)."""
        await send_time_db.rewrite_content(conn, [message], claimer=claimer)
