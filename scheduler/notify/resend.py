"""Email through Resend's API: one idempotency key per delivery, so a retry never sends twice.

The only module that imports the Resend SDK. The SDK keeps its key, base URL and HTTP client
in module globals; each call sets them from this transport right before the SDK reads them
(synchronously, before its first await), so two transports never see each other's key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.utils import parseaddr
from typing import TYPE_CHECKING, TypeVar

import resend
from resend.exceptions import ResendError

from scheduler.clock import Clock, SystemClock
from scheduler.notify.ratelimit import parse_retry_after
from scheduler.notify.resend_http import NetworkError, PooledAiohttpClient
from scheduler.notify.transport import (
    AlreadySentError,
    OnRequest,
    PermanentSendError,
    SendError,
    TransientSendError,
    observe_request,
)
from scheduler.records import OutgoingMessage
from scheduler.redact import mask_email, redact_text
from scheduler.vocabulary import Channel

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from datetime import datetime

    from scheduler.settings import Settings

PROVIDER = "resend"
# One API call. Resend answers in well under a second; 15 s rides out a slow network without
# letting a hung connection hold a job (and shutdown) for the SDK's default of 30 s.
REQUEST_TIMEOUT_SECONDS = 15.0
_REASON_MAX_CHARS = 300
SERVER_ERROR = "server_error"  # the code of a transient failure that Resend answered with a 5xx

T = TypeVar("T")


class ResendTransport:
    """Sends email with Resend's async API, against RESEND_API_URL."""

    channel = Channel.EMAIL
    provider = PROVIDER
    batches = True

    def __init__(
        self,
        settings: Settings,
        *,
        on_request: OnRequest | None = None,
        clock: Clock | None = None,
        request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if settings.resend_api_key is None:
            raise ValueError("email is not configured (RESEND_API_KEY)")
        self._api_key = settings.resend_api_key.get_secret_value()
        self._from = settings.email_from
        self._reply_to = settings.email_reply_to
        self._api_url = settings.resend_api_url.rstrip("/")
        self._on_request = on_request
        self._clock: Clock = clock or SystemClock()
        self._timeout = request_timeout_seconds
        self._http = PooledAiohttpClient()

    # The Transport protocol ------------------------------------------------

    async def send(self, message: OutgoingMessage) -> str:
        """Send the email under its delivery id as idempotency key: a replay returns the same id."""
        params = self._params(message)
        options: resend.Emails.SendOptions = {"idempotency_key": str(message.delivery_id)}
        response = await self._call(lambda: resend.Emails.send_async(params, options), message=message)
        return str(response["id"])

    async def send_batch(self, messages: list[OutgoingMessage], key: str) -> list[str]:
        """Send up to 100 emails in one POST /emails/batch under idempotency key `key` (strict
        validation: one invalid email refuses them all, code `validation_error`). A replay of the
        same batch under the same key answers the first ids and sends nothing."""
        params = [self._params(message) for message in messages]
        options: resend.Batch.SendOptions = {"idempotency_key": key}
        response = await self._call(lambda: resend.Batch.send_async(params, options), message=messages[0], batch=True)
        ids = [str(item["id"]) for item in response.get("data") or []]
        if len(ids) != len(messages):
            raise TransientSendError(
                f"Resend answered {len(ids)} ids for a batch of {len(messages)}", code="batch_mismatch", ambiguous=True
            )
        return ids

    def _params(self, message: OutgoingMessage) -> resend.Emails.SendParams:
        if not message.subject:
            raise PermanentSendError("an email needs a subject", code="no_subject")
        params: resend.Emails.SendParams = {
            "from": self._from,
            "to": [message.to],
            "subject": message.subject,
            "text": message.text,
            "tags": [{"name": "kind", "value": message.kind.value}],
        }
        if message.html:
            params["html"] = message.html
        if self._reply_to:
            params["reply_to"] = self._reply_to
        return params

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """Always None: resending under the same idempotency key cannot send twice."""
        return None

    async def check(self) -> str:
        """List the domains: proves the key, and that EMAIL_FROM's domain is verified."""
        try:
            listing = await self._call(resend.Domains.list_async)
        except PermanentSendError as exc:
            if exc.code == "restricted_api_key":
                return "API key accepted (sending access only, so domains were not listed)"
            raise
        domains = {str(item["name"]).lower(): str(item["status"]) for item in listing["data"]}
        sender_domain = parseaddr(self._from)[1].rpartition("@")[2].lower()
        status = domains.get(sender_domain)
        if status is None and not listing.get("has_more", False):
            raise PermanentSendError(
                f"EMAIL_FROM's domain {sender_domain} is not a domain of this Resend account",
                code="domain_missing",
            )
        if status is not None and status != "verified":
            raise PermanentSendError(
                f"EMAIL_FROM's domain {sender_domain} is {status} in Resend, not verified",
                code="domain_not_verified",
            )
        return f"API key accepted; sending domain {sender_domain} {status or 'listed'}"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._http.aclose()
        if resend.default_async_http_client is self._http:
            resend.default_async_http_client = resend._auto_async_http_client

    # Internals ---------------------------------------------------------------

    async def _call(
        self, request: Callable[[], Awaitable[T]], *, message: OutgoingMessage | None = None, batch: bool = False
    ) -> T:
        """Run one SDK coroutine under the timeout, timing it and translating its failures."""
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                # Read by the SDK before its first await: safe with other transports around.
                resend.api_key = self._api_key
                resend.api_url = self._api_url
                resend.default_async_http_client = self._http
                result = await request()
        except Exception as exc:
            error = self._translate(exc, message)
            if batch and isinstance(error, TransientSendError) and error.code == SERVER_ERROR and not error.ambiguous:
                # A 5xx may come after Resend accepted the batch: only the same batch under the same key is safe.
                error = TransientSendError(
                    f"{error.reason}; the batch may have been accepted", code=error.code,
                    retry_after_seconds=error.retry_after_seconds, ambiguous=True,
                )  # fmt: skip
            observe_request(self._on_request, PROVIDER, error, self._clock.monotonic() - started)
            # Not chained: the SDK's exception text can hold the recipient's address.
            raise error from None
        observe_request(self._on_request, PROVIDER, None, self._clock.monotonic() - started)
        return result

    def _translate(self, exc: Exception, message: OutgoingMessage | None) -> SendError:
        if isinstance(exc, SendError):
            return exc
        if isinstance(exc, TimeoutError):
            # Safe to retry either way: the idempotency key makes a replay return the first id.
            return TransientSendError(
                f"no answer from Resend within {self._timeout:g} s", ambiguous=message is not None
            )
        if isinstance(exc, NetworkError):
            return TransientSendError(
                f"{exc.message} at {self._api_url}",
                code="network_error",
                ambiguous=exc.request_sent and message is not None,
            )
        if not isinstance(exc, ResendError):
            return TransientSendError(f"Resend call failed ({type(exc).__name__})")
        return self._translate_api_error(exc, message)

    def _translate_api_error(  # noqa: PLR0911 - one answer per kind of refusal
        self, exc: ResendError, message: OutgoingMessage | None
    ) -> SendError:
        try:
            status = int(exc.code)
        except (TypeError, ValueError):
            status = 500
        kind = str(exc.error_type or "")
        detail = str(exc.message or "")
        if message is not None:  # even an address too malformed for redact_text to spot
            detail = detail.replace(message.to, mask_email(message.to))
        detail = redact_text(detail, secrets=[self._api_key])[:_REASON_MAX_CHARS]
        label = f"HTTP {status} {kind}".rstrip()
        if kind == "HttpClientError":
            # The SDK's own wrapping of a failure below HTTP (when its default client is used).
            return TransientSendError("connection to Resend failed", code="network_error")
        if status == 429 or status >= 500:
            headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
            retry_after = parse_retry_after(headers.get("retry-after"), self._clock.now())
            if status == 429:
                return TransientSendError(
                    f"Resend is rate limiting ({label})", code=kind or "429", retry_after_seconds=retry_after
                )
            return TransientSendError(
                f"Resend is failing ({label})", code=SERVER_ERROR, retry_after_seconds=retry_after
            )
        if status == 409 and kind == "concurrent_idempotent_requests":
            # The first attempt is still in flight at Resend; asking again later is safe.
            return TransientSendError(
                f"an earlier attempt of this email is still in progress at Resend ({label})",
                code=kind,
                ambiguous=True,
            )
        if status == 409 and kind == "invalid_idempotent_request":
            # Resend keeps a key once it sent an email under it: an earlier attempt of this
            # delivery went out (its text since rewritten, see notify/send_time.py).
            return AlreadySentError(f"Resend already sent this delivery under its idempotency key ({label})", code=kind)
        if status == 409:
            return PermanentSendError(f"Resend refused the email ({label}): {detail}".rstrip(": "), code=kind or "409")
        if status in (401, 403) and kind in ("missing_api_key", "invalid_api_key"):
            return PermanentSendError(f"Resend rejected the API key ({label})", code=kind)
        if kind == "restricted_api_key":
            return PermanentSendError(f"the Resend API key has sending access only ({label})", code=kind)
        if status >= 400:
            return PermanentSendError(
                f"Resend refused the email ({label}): {detail}".rstrip(": "),
                code=kind or str(status),
            )
        return TransientSendError(f"unexpected answer from Resend ({label})", code=kind or None)
