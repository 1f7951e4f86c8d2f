"""What a Twilio call that failed means: transient or permanent, ambiguous or not, and a reason
safe to show (no number in full, no secret). Pure: it reads what the HTTP layer saw."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from scheduler.clock import Clock
from scheduler.notify.ratelimit import parse_retry_after
from scheduler.notify.transport import PermanentSendError, SendError, TransientSendError
from scheduler.records import OutgoingMessage
from scheduler.redact import mask_phone, redact_text

_REASON_MAX_CHARS = 300

# Error codes whose meaning we can state plainly (https://www.twilio.com/docs/api/errors).
_KNOWN_CODES: Mapping[int, str] = {
    20003: "Twilio rejected the credentials",
    21211: "Twilio says the recipient's number is not a valid phone number",
    21408: "this Twilio account is not permitted to send to the recipient's region",
    21610: "the recipient has opted out of messages from this sender",
    21614: "Twilio says the recipient's number cannot receive this message",
    63003: "the recipient's number is not on WhatsApp",
    63007: "TWILIO_WHATSAPP_NUMBER is not a WhatsApp sender on this Twilio account",
}
_OUTSIDE_SESSION_WINDOW = 63016


@dataclass(slots=True)
class Exchange:
    """What the HTTP layer saw of one SDK call; the SDK's exceptions drop the headers."""

    request_sent: bool = False
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class TwilioErrors:
    """Translates an SDK call's failure into a SendError."""

    def __init__(self, *, timeout_seconds: float, base_url: str, auth_token: str, clock: Clock) -> None:
        self._timeout_seconds = timeout_seconds
        self._base_url = base_url
        self._auth_token = auth_token
        self._clock = clock

    def translate(
        self,
        exc: Exception,
        exchange: Exchange,
        *,
        message: OutgoingMessage | None,
        creates: bool,
    ) -> SendError:
        if isinstance(exc, SendError):
            return exc
        # Only a create can be ambiguous, and only once the request has left this process.
        maybe_sent = creates and exchange.request_sent
        if exchange.status is None:
            # No answer at all: a timeout, a refused or dropped connection, a DNS failure.
            if isinstance(exc, TimeoutError):
                what = f"no answer from Twilio within {self._timeout_seconds:g} s"
            elif isinstance(exc, aiohttp.ClientConnectorError):
                why = exc.os_error.strerror or "refused"
                what = f"cannot connect to Twilio at {self._base_url} ({why})"
            elif isinstance(exc, aiohttp.ClientError | OSError):
                what = f"connection to Twilio failed ({type(exc).__name__})"
            else:
                what = f"Twilio call failed ({type(exc).__name__})"
            if maybe_sent:
                what += "; the message may have been sent"
            return TransientSendError(what, ambiguous=maybe_sent)
        return self._status(exchange, message=message, creates=creates)

    def _status(self, exchange: Exchange, *, message: OutgoingMessage | None, creates: bool) -> SendError:
        status = exchange.status or 0
        code, detail = _error_body(exchange.body)
        code_text = str(code) if code is not None else str(status)
        if status < 300:
            # Twilio answered yes but the body was unreadable: the message probably exists.
            return TransientSendError(
                f"Twilio answered HTTP {status} with an unreadable body",
                code=code_text,
                ambiguous=creates,
            )
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(exchange.headers.get("retry-after"), self._clock.now())
            what = "Twilio is rate limiting" if status == 429 else "Twilio is failing"
            return TransientSendError(
                f"{what} (HTTP {status}{_error_suffix(code)})",
                code=code_text,
                retry_after_seconds=retry_after,
            )
        if status == 401:
            return PermanentSendError("Twilio rejected the credentials (HTTP 401)", code=code_text)
        if status < 400:
            return TransientSendError(f"unexpected answer from Twilio (HTTP {status})", code=code_text)
        return PermanentSendError(self._refusal(status, code, detail, message), code=code_text)

    def _refusal(self, status: int, code: int | None, detail: str, message: OutgoingMessage | None) -> str:
        if code == _OUTSIDE_SESSION_WINDOW:
            kind = message.kind.value.upper() if message is not None else "<KIND>"
            return (
                "the recipient is outside WhatsApp's 24-hour session window: an approved "
                f"template is needed (set TWILIO_CONTENT_SID_{kind}) (Twilio error 63016)"
            )
        if code is not None and code in _KNOWN_CODES:
            return f"{_KNOWN_CODES[code]} (HTTP {status}, Twilio error {code})"
        text = f"Twilio refused the request (HTTP {status}{_error_suffix(code)})"
        if detail:
            if message is not None:  # even a number too odd for redact_text to spot
                detail = detail.replace(message.to, mask_phone(message.to))
            safe = redact_text(detail, secrets=[self._auth_token])
            text += f": {safe[:_REASON_MAX_CHARS]}"
        return text


def _error_body(body: str) -> tuple[int | None, str]:
    """Twilio's error code and message from an error body, when it is Twilio's JSON."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(payload, dict):
        return None, ""
    raw_code = payload.get("code")
    code = raw_code if isinstance(raw_code, int) else None
    detail = payload.get("message") or payload.get("detail") or payload.get("title") or ""
    return code, str(detail)


def _error_suffix(code: int | None) -> str:
    return f", Twilio error {code}" if code is not None else ""
