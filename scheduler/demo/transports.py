"""The demo's channels: WhatsApp printed on the console, email off (as without RESEND_API_KEY), so
the demo shows messages sent, one retried, and others skipped because their channel is off."""

from __future__ import annotations

from datetime import datetime
from typing import TextIO
from uuid import UUID

from scheduler.demo.seed import FLAKY_REFERENCE
from scheduler.notify.console import ConsoleTransport
from scheduler.notify.transport import TransientSendError, Transport
from scheduler.records import OutgoingMessage
from scheduler.vocabulary import Channel, MessageKind

RETRY_AFTER_SECONDS = 1.0  # the stand-in provider's Retry-After: the retry comes within the same run


class FailsOnceTransport:
    """Passes messages on to `inner`, except that the first event reminder of one booking fails
    once, as a provider timeout would, so the dispatcher retries it."""

    def __init__(self, inner: ConsoleTransport, *, booking_reference: str) -> None:
        self._inner = inner
        self._reference = booking_reference
        self._failed: UUID | None = None
        self.channel = inner.channel
        self.provider = inner.provider

    async def send(self, message: OutgoingMessage) -> str:
        chosen = message.booking_reference == self._reference and message.kind is MessageKind.BOOKING_REMINDER
        if chosen and self._failed is None:
            self._failed = message.delivery_id
            raise TransientSendError(
                "the provider did not answer in time (simulated by the demo)", retry_after_seconds=RETRY_AFTER_SECONDS
            )
        return await self._inner.send(message)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        return await self._inner.find_sent(message, since)

    async def check(self) -> str:
        return await self._inner.check()

    async def aclose(self) -> None:
        await self._inner.aclose()


def demo_transports(stream: TextIO) -> dict[Channel, Transport]:
    """WhatsApp printed to `stream`, failing once for one booking; no email transport (channel off)."""
    whatsapp = FailsOnceTransport(ConsoleTransport(Channel.WHATSAPP, stream), booking_reference=FLAKY_REFERENCE)
    return {Channel.WHATSAPP: whatsapp}
