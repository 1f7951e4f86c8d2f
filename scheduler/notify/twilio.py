"""WhatsApp through Twilio's Messages API: bounded calls, honest retry advice, no double sends.

The only module that imports the Twilio SDK. Every call is bounded by REQUEST_TIMEOUT_SECONDS
and made exactly once (the SDK's own retries would re-POST a message after a 5xx); failures
come out as TransientSendError or PermanentSendError with a reason safe to show.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from twilio.base import values
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from scheduler.clock import Clock, SystemClock
from scheduler.notify.transport import OnRequest, PermanentSendError, observe_request
from scheduler.notify.twilio_errors import Exchange, TwilioErrors
from scheduler.phones import InvalidPhoneNumber, to_e164
from scheduler.records import OutgoingMessage
from scheduler.redact import mask_phone
from scheduler.vocabulary import Channel

if TYPE_CHECKING:
    from scheduler.settings import Settings

PROVIDER = "twilio"
# One API call. Twilio answers in well under a second; 15 s rides out a slow network without
# letting a hung connection hold a job (and shutdown) for the SDK's default of five minutes.
REQUEST_TIMEOUT_SECONDS = 15.0
# Twilio stamps date_sent with its own clock; look this far before `since` for an earlier attempt.
FIND_SENT_CLOCK_SKEW_SECONDS = 300.0
# A recipient gets a handful of messages a day; more than this many since an attempt is absurd.
FIND_SENT_MAX_RECORDS = 200

# `(provider, outcome, seconds)` after each provider call, for provider_request_duration_seconds;
# outcome is "success", "transient_error" or "permanent_error".

# Set around each SDK call. The holder is mutable, so aiohttp's writer task (which runs in a
# copy of the caller's context) reports into the same object.
_EXCHANGE: ContextVar[Exchange | None] = ContextVar("twilio_exchange", default=None)


@contextlib.contextmanager
def _watch() -> Iterator[Exchange]:
    exchange = Exchange()
    token = _EXCHANGE.set(exchange)
    try:
        yield exchange
    finally:
        _EXCHANGE.reset(token)


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.request_sent = True


class _ObservingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's aiohttp client, reporting each response's status and headers to `_EXCHANGE`."""

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        auth = kwargs.pop("auth", None)
        if auth is not None:
            # The SDK would wrap it in aiohttp.BasicAuth, deprecated since aiohttp 3.14.
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": _basic(*auth)}
        exchange = _EXCHANGE.get()
        if exchange is not None:  # a listing makes one request per page: report the latest
            exchange.request_sent, exchange.status = False, None
        response = await super().request(*args, **kwargs)
        if exchange is not None:
            exchange.status = int(response.status_code)
            exchange.headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
            exchange.body = str(response.text or "")
        return response

    # The SDK logs every request at INFO: URL, query (the recipient's number) and headers.
    def log_request(self, kwargs: dict[str, Any]) -> None:
        return None

    def log_response(self, status_code: int, response: Any) -> None:
        return None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _mask_sid(sid: str) -> str:
    return f"{sid[:4]}…{sid[-4:]}" if len(sid) > 10 else "***"


class TwilioTransport:
    """Sends WhatsApp messages (or, for `Channel.SMS`, the SMS fallback) with Twilio's async client,
    against TWILIO_API_BASE_URL."""

    provider = PROVIDER

    def __init__(
        self,
        settings: Settings,
        *,
        channel: Channel = Channel.WHATSAPP,
        on_request: OnRequest | None = None,
        clock: Clock | None = None,
        request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_whatsapp_number):
            raise ValueError("WhatsApp is not configured (TWILIO_ACCOUNT_SID and the rest)")
        self.channel = channel
        # WhatsApp goes `whatsapp:+E164` to `whatsapp:+E164`; an SMS (the fallback) from TWILIO_SMS_FROM,
        # a number or a Messaging Service (which picks the number), to the bare `+E164`.
        self._prefix = "whatsapp:" if channel is Channel.WHATSAPP else ""
        self._messaging_service: str | None = None
        sender = settings.twilio_whatsapp_number if channel is Channel.WHATSAPP else settings.twilio_sms_from
        if sender is None:
            raise ValueError("SMS is not configured (TWILIO_SMS_FROM)")
        if channel is Channel.SMS and sender.startswith("MG"):
            self._messaging_service, self._from = sender, None
        else:
            try:
                self._from = f"{self._prefix}{to_e164(sender)}"
            except InvalidPhoneNumber as exc:
                name = "TWILIO_WHATSAPP_NUMBER" if channel is Channel.WHATSAPP else "TWILIO_SMS_FROM"
                raise ValueError(f"{name}: {exc}") from None
        self._account_sid = settings.twilio_account_sid
        self._auth_token = settings.twilio_auth_token.get_secret_value()
        self._base_url = settings.twilio_api_base_url.rstrip("/")
        self._status_callback_url = settings.twilio_status_callback_url
        self._on_request = on_request
        self._clock: Clock = clock or SystemClock()
        self._timeout = request_timeout_seconds
        self._errors = TwilioErrors(
            timeout_seconds=request_timeout_seconds,
            base_url=self._base_url,
            auth_token=self._auth_token,
            clock=self._clock,
        )
        self._client: Client | None = None
        self._http: _ObservingHttpClient | None = None

    # The Transport protocol ------------------------------------------------

    async def send(self, message: OutgoingMessage) -> str:
        """Create the message at Twilio and return its SID (SM…)."""
        to = f"{self._prefix}{self._recipient(message)}"
        kwargs: dict[str, Any] = {"to": to}
        if self._messaging_service:
            kwargs["messaging_service_sid"] = self._messaging_service
        else:
            kwargs["from_"] = self._from
        if message.content_sid and self.channel is Channel.WHATSAPP:
            kwargs["content_sid"] = message.content_sid
            kwargs["content_variables"] = json.dumps(message.content_variables)
        else:
            kwargs["body"] = message.text
        if self._status_callback_url:
            kwargs["status_callback"] = self._status_callback_url
        messages = self._twilio().api.v2010.account.messages
        instance = await self._call(lambda: messages.create_async(**kwargs), message=message, creates=True)
        return str(instance.sid)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """The SID of a message with this content sent to this recipient since `since`, if any."""
        if since.tzinfo is None:
            raise ValueError("find_sent needs a timezone-aware `since`")
        to = f"{self._prefix}{self._recipient(message)}"
        # The SDK formats the datetime with strftime and a literal Z: it must be in UTC already.
        after = since.astimezone(UTC) - timedelta(seconds=FIND_SENT_CLOCK_SKEW_SECONDS)
        messages = self._twilio().api.v2010.account.messages
        records = await self._call(
            # Through a Messaging Service the sender is the number it picked: match on the recipient.
            lambda: messages.list_async(
                to=to, from_=self._from or values.unset, date_sent_after=after, limit=FIND_SENT_MAX_RECORDS
            ),
            message=message,
        )
        for record in records:  # newest first
            if _same_content(message, record.body):
                return str(record.sid)
        return None

    async def check(self) -> str:
        """Fetch the account: proves the credentials and the base URL; says the account's status."""
        accounts = self._twilio().api.v2010.accounts
        account = await self._call(lambda: accounts(self._account_sid).fetch_async())
        status = str(account.status or "unknown")
        masked = _mask_sid(self._account_sid)
        if status != "active":
            raise PermanentSendError(f"Twilio account {masked} is {status}", code=status)
        return f"account {masked} {status}"

    async def aclose(self) -> None:
        """Close the HTTP session (a no-op when nothing was ever sent)."""
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    # Internals ---------------------------------------------------------------

    def _twilio(self) -> Client:
        # Built on first use, inside the running event loop: the SDK's client opens an aiohttp
        # session in its constructor.
        if self._client is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            # No max_retries: the SDK's retry client re-POSTs on any 5xx, which can send twice.
            self._http = _ObservingHttpClient(trace_configs=[trace])
            client = Client(self._account_sid, self._auth_token, http_client=self._http)
            # TWILIO_REGION / TWILIO_EDGE in the environment would make the SDK rewrite every
            # host name (api.au1.twilio.com, ...); TWILIO_API_BASE_URL is the one way in.
            client.region = None
            client.edge = None
            client.api.base_url = self._base_url
            self._client = client
        return self._client

    def _recipient(self, message: OutgoingMessage) -> str:
        try:
            return to_e164(message.to)
        except InvalidPhoneNumber as exc:
            raise PermanentSendError(f"{exc}: {mask_phone(message.to)}", code="invalid_phone_number") from None

    async def _call(
        self,
        request: Callable[[], Any],
        *,
        message: OutgoingMessage | None = None,
        creates: bool = False,
    ) -> Any:
        """Run one SDK coroutine under the timeout, timing it and translating its failures."""
        started = self._clock.monotonic()
        with _watch() as exchange:
            try:
                async with asyncio.timeout(self._timeout):
                    result = await request()
            except Exception as exc:
                error = self._errors.translate(exc, exchange, message=message, creates=creates)
                observe_request(self._on_request, PROVIDER, error, self._clock.monotonic() - started)
                # Not chained: the SDK's exception text can hold the recipient's number.
                raise error from None
        observe_request(self._on_request, PROVIDER, None, self._clock.monotonic() - started)
        return result


def _same_content(message: OutgoingMessage, body: str | None) -> bool:
    """Whether a listed message is this one: same text, or a template filled with these values."""
    if body is None:
        return False
    if not message.content_sid:
        return body.strip() == message.text.strip()
    # Twilio lists a template message with its rendered text, which we never see; every
    # variable's value appearing in it is the best evidence available.
    values = [value for value in message.content_variables.values() if value]
    return bool(values) and all(value in body for value in values)


__all__ = [
    "FIND_SENT_CLOCK_SKEW_SECONDS",
    "REQUEST_TIMEOUT_SECONDS",
    "OnRequest",
    "TwilioTransport",
]
