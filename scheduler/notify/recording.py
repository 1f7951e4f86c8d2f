"""An in-memory transport for tests: records what it was asked to send and fails on cue.

Script failures with `fail_next(n, error)` (transient by default), `fail_to(address, error)` and
`drop_next(n)` (the message goes out but the answer is lost: an ambiguous failure that
`find_sent` then resolves); inspect `attempts`, `sent` and `accepted` afterwards.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from scheduler.notify.transport import SendError, TransientSendError
from scheduler.records import OutgoingMessage
from scheduler.vocabulary import Channel


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the fake accepted, with the id it answered."""

    provider_id: str
    message: OutgoingMessage


class RecordingTransport:
    """The Transport protocol without a network. Ids run `<channel>-1`, `<channel>-2`, …"""

    def __init__(self, channel: Channel, *, provider: str = "recording") -> None:
        self.channel = channel
        self.provider = provider
        self.attempts: list[OutgoingMessage] = []  # every call to send, failed ones included
        self.accepted: list[SentMessage] = []  # what went out (including dropped answers)
        self.find_sent_calls: list[tuple[OutgoingMessage, datetime]] = []
        self.check_error: SendError | None = None
        self.closed = False
        self._failures: deque[SendError | None] = deque()  # None: accept, then lose the answer
        self._by_address: dict[str, SendError] = {}
        self._counter = 0
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    # Scripting ----------------------------------------------------------------

    def fail_next(self, count: int = 1, error: SendError | None = None) -> None:
        """The next `count` sends raise `error` (a transient failure by default), then succeed."""
        failure = error or TransientSendError("scripted transient failure", code="scripted")
        self._failures.extend([failure] * count)

    def recover(self) -> None:
        """The outage is over: failures still queued by `fail_next` or `drop_next` are dropped."""
        self._failures.clear()

    def drop_next(self, count: int = 1) -> None:
        """The next `count` sends go out but raise an ambiguous TransientSendError (lost answer)."""
        self._failures.extend([None] * count)

    def fail_to(self, address: str, error: SendError) -> None:
        """Every send to `address` raises `error`, until `clear_rules()`."""
        self._by_address[address] = error

    def clear_rules(self) -> None:
        self._failures.clear()
        self._by_address.clear()

    def pause(self) -> None:
        """Hold every send until `resume()`: a send in flight, for shutdown and lease tests."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # Inspection -----------------------------------------------------------------

    @property
    def sent(self) -> list[OutgoingMessage]:
        """The messages that went out, in order."""
        return [item.message for item in self.accepted]

    def sent_to(self, address: str) -> list[OutgoingMessage]:
        return [message for message in self.sent if message.to == address]

    async def wait_for_attempts(self, count: int) -> None:
        """Return once at least `count` sends were attempted (wrap in asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.attempts) >= count)

    # The Transport protocol -----------------------------------------------------

    async def send(self, message: OutgoingMessage) -> str:
        self.attempts.append(message)
        async with self._changed:
            self._changed.notify_all()
        await self._open.wait()
        rule = self._by_address.get(message.to)
        if rule is not None:
            raise rule
        if self._failures:
            failure = self._failures.popleft()
            if failure is not None:
                raise failure
            self._accept(message)
            raise TransientSendError("scripted lost answer", code="scripted", ambiguous=True)
        return self._accept(message)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """The id of an accepted message with the same delivery id, if any."""
        self.find_sent_calls.append((message, since))
        for item in reversed(self.accepted):
            if item.message.delivery_id == message.delivery_id:
                return item.provider_id
        return None

    async def check(self) -> str:
        if self.check_error is not None:
            raise self.check_error
        return f"recording transport ({self.channel.value})"

    async def aclose(self) -> None:
        self.closed = True

    def _accept(self, message: OutgoingMessage) -> str:
        self._counter += 1
        provider_id = f"{self.channel.value}-{self._counter}"
        self.accepted.append(SentMessage(provider_id, message))
        return provider_id
