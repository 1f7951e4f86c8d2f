"""A transport built on first use, so an idle daemon never loads a provider's SDK.

The Twilio and Resend SDKs (with aiohttp's client and their dependencies) cost about
15 MB of memory and a fifth of a second to import; most processes (`--run-once` of a cleanup,
the daemon between runs, `status`) never send a message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from scheduler.notify.transport import BatchTransport, Transport
from scheduler.records import OutgoingMessage
from scheduler.vocabulary import Channel


class LazyTransport:
    """Stands for the transport `build` makes, and makes it when a message is first sent or checked."""

    def __init__(
        self, channel: Channel, provider: str, build: Callable[[], Transport], *, batches: bool = False
    ) -> None:
        self.channel = channel
        self.provider = provider
        self.batches = batches  # what the transport it builds can do (Resend: /emails/batch)
        self._build = build
        self._inner: Transport | None = None

    @property
    def built(self) -> bool:
        return self._inner is not None

    def build(self) -> None:
        """Make the transport now (the first message is about to go: its wait for a slot of the
        send ceiling must not be followed by the SDK's import)."""
        self._transport()

    def _transport(self) -> Transport:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    async def send(self, message: OutgoingMessage) -> str:
        return await self._transport().send(message)

    async def send_batch(self, messages: list[OutgoingMessage], key: str) -> list[str]:
        inner = self._transport()
        if not isinstance(inner, BatchTransport) or not self.batches:
            raise TypeError(f"{self.provider} sends one message a request")
        return await inner.send_batch(messages, key)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        return await self._transport().find_sent(message, since)

    async def check(self) -> str:
        return await self._transport().check()

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
