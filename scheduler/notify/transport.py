"""The Transport protocol: the only face of a provider the rest of the daemon sees.

Failures come out as one of two exceptions, transient (try again later) or permanent (never
retry), and a message the provider already has from an earlier attempt as AlreadySentError;
nothing provider-specific leaks upward.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from scheduler.records import OutgoingMessage
from scheduler.vocabulary import Channel


class SendError(Exception):
    """A message that did not go out. `reason` is safe to show: no address, no secret."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TransientSendError(SendError):
    """Worth retrying: network failure, timeout, HTTP 429 or 5xx."""

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        retry_after_seconds: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after_seconds = retry_after_seconds
        # True when the request may have reached the provider (sent, then no answer).
        self.ambiguous = ambiguous


class PermanentSendError(SendError):
    """Never retried: the provider refused this message for good (bad number, validation, opt-out)."""


class AlreadySentError(SendError):
    """The provider already has this message from an earlier attempt whose answer was lost (Resend
    refusing a second payload under the delivery's Idempotency-Key): it went out; its id is unknown."""


def request_outcome(error: SendError | None) -> str:
    """The `outcome` label of provider_request_duration_seconds for a call that ended so."""
    if error is None:
        return "success"
    if isinstance(error, AlreadySentError):
        return "success"
    return "transient_error" if isinstance(error, TransientSendError) else "permanent_error"


OnRequest = Callable[[str, str, float], None]  # (provider, outcome, seconds): a request timed


def observe_request(on_request: OnRequest | None, provider: str, error: SendError | None, seconds: float) -> None:
    """Report one provider request, how it ended and how long it took (when anyone listens)."""
    if on_request is not None:
        on_request(provider, request_outcome(error), seconds)


class Transport(Protocol):
    """Sends messages on one channel."""

    channel: Channel
    provider: str  # metric label: "twilio", "resend", "console", ...

    async def send(self, message: OutgoingMessage) -> str:
        """Send the message and return the provider's id for it."""
        ...

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """The provider id of this message if an earlier, ambiguous attempt did go out."""
        ...

    async def check(self) -> str:
        """A harmless authenticated call; returns what it saw, raises SendError on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class BatchTransport(Transport, Protocol):
    """A transport that can also send many messages in one request (Resend's /emails/batch)."""

    batches: bool  # True: send_batch works

    async def send_batch(self, messages: list[OutgoingMessage], key: str) -> list[str]:
        """Send all of them in one request under idempotency key `key`; the provider ids, in order.

        All or nothing: a PermanentSendError refuses the whole batch (a `validation_error` code: one
        of its messages is invalid), a TransientSendError leaves it all unsent, or, when
        `ambiguous`, possibly all sent (retry the same batch under the same key to find out).
        """
        ...
