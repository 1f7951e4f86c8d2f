"""Stand-in HTTP servers answering like Twilio's and Resend's APIs, for adapter and CLI tests.

Each server binds 127.0.0.1 on a free port, records every request, keeps the messages it
accepted, and can be scripted per route: answer with a status, answer late, never answer,
or accept the message and then drop the connection.

    async with FakeTwilio() as twilio:
        twilio.script(Reply(500), Reply.twilio_error(400, 21211))
        ...  # point TWILIO_API_BASE_URL at twilio.url
        assert twilio.accepted[0].body == "..."
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urlencode

from aiohttp import web
from multidict import CIMultiDict


def utc_now() -> datetime:
    return datetime.now(UTC)


def max_in_window(times: Iterable[float], window_seconds: float = 1.0) -> int:
    """The most events found in any half-open window [t, t + window_seconds) of these times."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window_seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def unused_local_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (a connection there is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. Without `accept`, the request is not processed (nothing is accepted).

    - status/body/headers: the answer (a dict or list body is sent as JSON, a str as text);
    - delay_seconds: answer this much later;
    - hang: never answer (the handler waits until the server stops);
    - drop: close the connection without answering;
    - accept: process the request normally first (the message is accepted and recorded), then
      hang, drop, or send the normal answer (or the scripted status, when not 200) after `delay_seconds`.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    hang: bool = False
    drop: bool = False
    accept: bool = False

    @classmethod
    def never(cls) -> Reply:
        """Never answer, process nothing."""
        return cls(hang=True)

    @classmethod
    def accept_then_drop(cls) -> Reply:
        """Accept the message, then close the connection without answering."""
        return cls(accept=True, drop=True)

    @classmethod
    def accept_then_hang(cls) -> Reply:
        """Accept the message, then never answer."""
        return cls(accept=True, hang=True)

    @classmethod
    def accept_late(cls, delay_seconds: float) -> Reply:
        """Accept the message, answer normally after a delay."""
        return cls(accept=True, delay_seconds=delay_seconds)

    @classmethod
    def accept_then_fail(cls, status: int = 500, body: Any = None) -> Reply:
        """Accept the message, then answer `status` (a 500 after acceptance)."""
        return cls(status=status, body=body, accept=True)

    @classmethod
    def twilio_error(
        cls,
        status: int,
        code: int,
        message: str = "scripted error",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An error in Twilio's JSON shape."""
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return cls(status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def resend_error(
        cls,
        status: int,
        name: str,
        message: str = "scripted error",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An error in Resend's JSON shape."""
        body = {"statusCode": status, "name": name, "message": message}
        return cls(status=status, body=body, headers=dict(headers or {}))


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server received it."""

    route: str  # e.g. "send", "list", "account", "domains", "unknown"
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    form: dict[str, str] | None
    json: Any
    at: float  # time.monotonic() on arrival
    received_at: datetime
    answer: str = ""  # "200", "429", "hang", "drop", ...


class FakeProviderServer:
    """The common machinery: routes, recording, scripting, latency, start and stop."""

    routes: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # (method, path pattern, route)

    def __init__(self, *, latency_seconds: float = 0.0, now: Callable[[], datetime] = utc_now):
        self.latency_seconds = latency_seconds
        self.now = now
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    # Lifecycle -------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        for method, pattern, route in self.routes:
            app.router.add_route(method, pattern, self._endpoint(route))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        self._stopping.set()  # releases hung handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._port}"

    # Scripting and inspection ---------------------------------------------

    def script(self, *replies: Reply, route: str = "send") -> None:
        """Answer the next requests on `route` with these replies, in order, then normally."""
        self._scripts.setdefault(route, deque()).extend(replies)

    def unscript(self, route: str = "send") -> None:
        """Forget the replies still scripted for `route`: answer normally from now on."""
        self._scripts.pop(route, None)

    def pending_replies(self, route: str = "send") -> int:
        return len(self._scripts.get(route, ()))

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.route == route]

    def times(self, route: str = "send") -> list[float]:
        """Arrival times (monotonic seconds) of the requests on a route, for max_in_window."""
        return [request.at for request in self.requests_to(route)]

    # Request handling --------------------------------------------------------

    def _endpoint(self, route: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            recorded = await self._record(route, request)
            if self.latency_seconds:
                await asyncio.sleep(self.latency_seconds)
            script = self._scripts.get(route)
            reply = script.popleft() if script else None
            if reply is None:
                response = await self._handle(route, request, recorded)
                recorded.answer = str(response.status)
                return response
            return await self._play(reply, route, request, recorded)

        return endpoint

    async def _record(self, route: str, request: web.Request) -> RecordedRequest:
        at = time.monotonic()  # when the request arrived, before its body is read (a large one takes a while)
        form: dict[str, str] | None = None
        body: Any = None
        if request.content_type == "application/x-www-form-urlencoded":
            form = {key: str(value) for key, value in (await request.post()).items()}
        elif request.content_type == "application/json" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        recorded = RecordedRequest(
            route=route,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            form=form,
            json=body,
            at=at,
            received_at=self.now(),
        )
        self.requests.append(recorded)
        return recorded

    async def _play(
        self, reply: Reply, route: str, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        if reply.accept:
            response = await self._handle(route, request, recorded)
        if reply.hang:
            recorded.answer = "hang"
            await self._stopping.wait()
            raise web.HTTPServiceUnavailable
        if reply.drop:
            recorded.answer = "drop"
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=599)  # never reaches the client
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        if response is None or reply.status != 200:  # accepted, then answered with the scripted error
            response = _response(reply.status, reply.body, reply.headers)
        recorded.answer = str(response.status)
        return response

    async def _handle(self, route: str, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        raise NotImplementedError


def _response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    if isinstance(body, dict | list):
        return web.json_response(body, status=status, headers=dict(headers or {}))
    return web.Response(status=status, text="" if body is None else str(body), headers=headers)


# Twilio ----------------------------------------------------------------------


@dataclass(slots=True)
class TwilioMessage:
    """A message the fake Twilio accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    content_sid: str | None
    content_variables: dict[str, str]
    status_callback: str | None
    date_created: datetime
    date_sent: datetime | None
    status: str = "queued"
    form: dict[str, str] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        """The message in Twilio's JSON shape."""
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": format_datetime(self.date_created),
            "date_sent": format_datetime(self.date_sent) if self.date_sent else None,
            "date_updated": format_datetime(self.date_created),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


class FakeTwilio(FakeProviderServer):
    """Twilio's Messages and Accounts API (2010-04-01), with basic auth.

    Routes: "send" (POST .../Messages.json), "list" (GET .../Messages.json with To, From,
    DateSent, DateSent> and DateSent< filters, newest first, paged), "account" (GET
    /Accounts/{sid}.json). A template message is listed with a body rendered from
    `templates[content_sid]` ({{1}}-style placeholders) or, without one, the variables' values.
    """

    routes = (
        ("POST", "/2010-04-01/Accounts/{sid}/Messages.json", "send"),
        ("GET", "/2010-04-01/Accounts/{sid}/Messages.json", "list"),
        ("GET", "/2010-04-01/Accounts/{sid}.json", "account"),
    )

    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0123456789abcdef" * 2,
        auth_token: str = "twilio-test-token-0123456789",  # noqa: S107 - a fake's fake token
        whatsapp_number: str | None = None,
        account_status: str = "active",
        latency_seconds: float = 0.0,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(latency_seconds=latency_seconds, now=now)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.whatsapp_number = whatsapp_number  # when set, any other From is refused (63007)
        self.account_status = account_status
        self.templates: dict[str, str] = {}
        self.accepted: list[TwilioMessage] = []
        # WhatsApp to these numbers is refused with this error code (63016 outside the session,
        # 63003 not on WhatsApp); an SMS to them goes through.
        self.refuse_whatsapp: dict[str, int] = {}
        # WhatsApp to these numbers is accepted, then reported `undelivered` with this error code in
        # a signed status callback, posted to `callback_target` (where the daemon listens; Twilio
        # would post to the public StatusCallback URL, which is what the signature covers).
        self.undeliver_whatsapp: dict[str, str] = {}
        self.callback_target: str | None = None
        self.callbacks: list[tuple[dict[str, str], int]] = []  # (form, HTTP status of the answer)
        self._callbacks_due: list[tuple[TwilioMessage, str, str]] = []
        # The senders an SMS may come from (numbers, Messaging Service SIDs); empty: any.
        self.sms_senders: set[str] = set()

    async def _handle(self, route: str, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if not self._authorised(request):
            return _response(
                401,
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if request.match_info["sid"] != self.account_sid:
            return _twilio_error(404, 20404, "The requested resource was not found")
        if route == "send":
            return self._create(recorded.form or {})
        if route == "list":
            return self._list(request)
        return _response(200, self._account())

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(f"{user}:{password}", f"{self.account_sid}:{self.auth_token}")

    def _create(self, form: dict[str, str]) -> web.Response:  # noqa: PLR0911 - one per refusal
        to = form.get("To", "")
        sender = form.get("From", "")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        number = to.removeprefix("whatsapp:")
        whatsapp = to.startswith("whatsapp:")
        if not (number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16):
            return _twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        refused = self._refuse_sender(form, number, whatsapp=whatsapp)
        if refused is not None:
            return refused
        sender = sender or form.get("MessagingServiceSid", "")  # the fake lists a service's SMS under its SID
        content_sid = form.get("ContentSid")
        variables: dict[str, str] = {}
        if content_sid:
            try:
                parsed = json.loads(form.get("ContentVariables", "{}"))
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                return _twilio_error(400, 21656, "The ContentVariables Parameter is invalid.")
            variables = {str(k): str(v) for k, v in parsed.items()}
            body = self._render(content_sid, variables)
        elif form.get("Body"):
            body = form["Body"]
        else:
            return _twilio_error(400, 21619, "A text message body or media urls must be specified.")
        callback = form.get("StatusCallback")
        if callback is not None and not callback.startswith(("http://", "https://")):
            return _twilio_error(400, 21609, "Invalid StatusCallback url")
        now = self.now()
        message = TwilioMessage(
            sid="SM" + uuid.uuid4().hex,
            account_sid=self.account_sid,
            to=to,
            from_=sender,
            body=body,
            content_sid=content_sid,
            content_variables=variables,
            status_callback=callback,
            date_created=now,
            # Real Twilio stamps date_sent when the message leaves its queue; here, at once.
            date_sent=now,
            form=dict(form),
        )
        self.accepted.append(message)
        if whatsapp and number in self.undeliver_whatsapp and callback:
            self._callbacks_due.append((message, callback, self.undeliver_whatsapp[number]))
        return _response(201, message.resource())

    async def _report_undelivered(self, message: TwilioMessage, callback: str, code: str) -> None:
        """Twilio's status callback for a message that could not be delivered, signed for `callback`."""
        from aiohttp import ClientSession
        from twilio.request_validator import RequestValidator

        message.status = "undelivered"
        form = {
            "AccountSid": self.account_sid, "MessageSid": message.sid, "SmsSid": message.sid,
            "MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": code,
            "To": message.to, "From": message.from_, "ApiVersion": "2010-04-01", "ChannelPrefix": "whatsapp",
        }  # fmt: skip
        signature = RequestValidator(self.auth_token).compute_signature(callback, form)
        async with (
            ClientSession() as session,
            session.post(
                self.callback_target or callback, data=form, headers={"X-Twilio-Signature": signature}
            ) as answer,
        ):
            self.callbacks.append((form, answer.status))

    async def callbacks_sent(self) -> None:
        """Post the status callbacks due so far and wait for their answers. Twilio reports a message
        undelivered some time after accepting it; posted here, they come after the sender has
        recorded its answer, as they would."""
        due, self._callbacks_due = self._callbacks_due, []
        await asyncio.gather(*(self._report_undelivered(*callback) for callback in due))

    def _refuse_sender(self, form: dict[str, str], number: str, *, whatsapp: bool) -> web.Response | None:
        """An SMS from an unknown sender (21606), WhatsApp from one (63007), or a scripted WhatsApp refusal."""
        sender = form.get("From", "")
        if not whatsapp:
            sender = sender or form.get("MessagingServiceSid", "")
            if not sender or (self.sms_senders and sender not in self.sms_senders):
                return _twilio_error(400, 21606, "The From phone number is not a valid, SMS-capable phone number")
            return None
        if not sender or (self.whatsapp_number and sender != self.whatsapp_number):
            return _twilio_error(400, 63007, "Twilio could not find a Channel with the specified From address")
        if number in self.refuse_whatsapp:
            code = self.refuse_whatsapp[number]
            return _twilio_error(400, code, f"scripted WhatsApp refusal {code}")
        return None

    def _render(self, content_sid: str, variables: dict[str, str]) -> str:
        template = self.templates.get(content_sid)
        if template is None:
            return " ".join(variables[key] for key in sorted(variables))
        for key, value in variables.items():
            template = template.replace("{{" + key + "}}", value)
        return template

    def _list(self, request: web.Request) -> web.Response:
        query = request.query
        found = [
            message
            for message in reversed(self.accepted)
            if query.get("To", message.to) == message.to
            and query.get("From", message.from_) == message.from_
            and _date_sent_matches(message.date_sent, query)
        ]
        page_size = min(int(query.get("PageSize", "50")), 1000)
        page = int(query.get("Page", "0"))
        chunk = found[page * page_size : (page + 1) * page_size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        filters = {key: value for key, value in query.items() if key not in ("Page", "PageToken")}

        def page_uri(number: int) -> str:
            return f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

        has_next = (page + 1) * page_size < len(found)
        return _response(
            200,
            {
                "messages": [message.resource() for message in chunk],
                "end": page * page_size + max(len(chunk) - 1, 0),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if has_next else None,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "start": page * page_size,
                "uri": page_uri(page),
            },
        )

    def _account(self) -> dict[str, Any]:
        created = format_datetime(datetime(2024, 1, 1, tzinfo=UTC))
        return {
            "auth_token": self.auth_token,  # the real API returns it too: it must not leak
            "date_created": created,
            "date_updated": created,
            "friendly_name": "Flavor Entertainers (test)",
            "owner_account_sid": self.account_sid,
            "sid": self.account_sid,
            "status": self.account_status,
            "subresource_uris": {},
            "type": "Full",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}.json",
        }


def _twilio_error(status: int, code: int, message: str) -> web.Response:
    reply = Reply.twilio_error(status, code, message)
    return _response(reply.status, reply.body)


def _parse_when(text: str) -> datetime | date:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return date.fromisoformat(text)


def _date_sent_matches(sent: datetime | None, query: Mapping[str, str]) -> bool:
    # Twilio's DateSent filters: `DateSent`, `DateSent>` (on or after), `DateSent<` (on or before).
    checks = [(key, query[key]) for key in ("DateSent", "DateSent>", "DateSent<") if key in query]
    if not checks:
        return True
    if sent is None:
        return False
    for key, text in checks:
        bound = _parse_when(text)
        if isinstance(bound, datetime):
            order = (sent > bound) - (sent < bound)
        else:
            order = (sent.date() > bound) - (sent.date() < bound)
        if (key == "DateSent" and order != 0) or (key == "DateSent>" and order < 0):
            return False
        if key == "DateSent<" and order > 0:
            return False
    return True


# Resend ----------------------------------------------------------------------


@dataclass(slots=True)
class ResendEmail:
    """An email the fake Resend accepted."""

    id: str
    payload: dict[str, Any]
    idempotency_key: str | None
    accepted_at: datetime

    @property
    def to(self) -> list[str]:
        to = self.payload.get("to", [])
        return [to] if isinstance(to, str) else list(to)


class FakeResend(FakeProviderServer):
    """Resend's POST /emails and POST /emails/batch (Bearer auth, JSON, Idempotency-Key) and GET /domains.

    Routes: "send", "batch" and "domains". A replay with a known Idempotency-Key and the same payload
    answers the first id again without accepting a new email; another payload under that key
    answers 409 invalid_idempotent_request. A key in `sending_only_keys` may send but not list
    domains (401 restricted_api_key), like a Resend "sending access" key.
    """

    routes = (
        ("POST", "/emails", "send"),
        ("POST", "/emails/batch", "batch"),
        ("GET", "/domains", "domains"),
    )

    def __init__(
        self,
        *,
        api_key: str = "re_test_0123456789abcdef",
        domains: Mapping[str, str] | None = None,
        latency_seconds: float = 0.0,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(latency_seconds=latency_seconds, now=now)
        self.api_key = api_key
        self.sending_only_keys: set[str] = set()
        # domain name -> status ("verified", "pending", "failed", ...)
        self.domains: dict[str, str] = dict(
            domains if domains is not None else {"flavorentertainers.com.au": "verified"}
        )
        self.accepted: list[ResendEmail] = []
        self._by_key: dict[str, ResendEmail] = {}
        self._batches_by_key: dict[str, tuple[Any, list[ResendEmail]]] = {}
        self.refuse: set[str] = set()  # addresses answered 422 validation_error, as a malformed one is

    async def _handle(self, route: str, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key or key == "None":
            return _resend_error(401, "missing_api_key", "Missing API key in the authorization")
        if not (secrets.compare_digest(key, self.api_key) or key in self.sending_only_keys):
            return _resend_error(403, "invalid_api_key", "API key is invalid")
        if route == "domains":
            if key in self.sending_only_keys:
                return _resend_error(401, "restricted_api_key", "This API key is restricted to only send emails")
            return _response(200, self._domain_list())
        if route == "batch":
            return self._send_batch(request, recorded.json)
        return self._send(request, recorded.json)

    def _invalid(self, payload: Any, where: str = "") -> web.Response | None:
        """Resend's 422 for an email it would not send, or None."""
        if not isinstance(payload, dict):
            return _resend_error(422, "validation_error", f"{where}Invalid JSON body")
        for name in ("from", "to", "subject"):
            if not payload.get(name):
                return _resend_error(422, "missing_required_field", f"{where}Missing `{name}` field.")
        recipients = payload["to"] if isinstance(payload["to"], list) else [payload["to"]]
        for address in recipients:
            local, at, domain = str(address).partition("@")
            if not (local and at and "." in domain) or address in self.refuse:
                return _resend_error(
                    422,
                    "validation_error",
                    f"{where}Invalid `to` field. The email address needs to follow the "
                    f"`email@example.com` format. Received: {address}",
                )
        return None

    def _send_batch(self, request: web.Request, payload: Any) -> web.Response:
        """POST /emails/batch, strict validation: one invalid email refuses the whole batch."""
        if not isinstance(payload, list) or not 1 <= len(payload) <= 100:
            return _resend_error(422, "validation_error", "The batch must hold 1 to 100 emails")
        for index, email in enumerate(payload):
            invalid = self._invalid(email, where=f"emails[{index}]: ")
            if invalid is not None:
                return invalid
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._batches_by_key:
            earlier_payload, earlier = self._batches_by_key[key]
            if earlier_payload != payload:
                return _resend_error(
                    409, "invalid_idempotent_request", "Same idempotency key used with a different request payload."
                )
            return _response(200, {"data": [{"id": email.id} for email in earlier]})
        emails = [
            ResendEmail(id=str(uuid.uuid4()), payload=email, idempotency_key=key, accepted_at=self.now())
            for email in payload
        ]
        self.accepted += emails
        if key is not None:
            self._batches_by_key[key] = (payload, emails)
        return _response(200, {"data": [{"id": email.id} for email in emails]})

    def _send(self, request: web.Request, payload: Any) -> web.Response:
        invalid = self._invalid(payload)
        if invalid is not None:
            return invalid
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            earlier = self._by_key.get(key)
            if earlier is not None:
                if earlier.payload != payload:
                    return _resend_error(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload.",
                    )
                return _response(200, {"id": earlier.id})
        email = ResendEmail(id=str(uuid.uuid4()), payload=payload, idempotency_key=key, accepted_at=self.now())
        self.accepted.append(email)
        if key is not None:
            self._by_key[key] = email
        return _response(200, {"id": email.id})

    def _domain_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                    "name": name,
                    "status": status,
                    "created_at": "2024-01-01 00:00:00.000000+00",
                    "region": "ap-northeast-1",
                    "capabilities": {"sending": "enabled", "receiving": "disabled"},
                }
                for name, status in self.domains.items()
            ],
        }


def _resend_error(status: int, name: str, message: str) -> web.Response:
    reply = Reply.resend_error(status, name, message)
    return _response(reply.status, reply.body)


__all__ = [
    "FakeProviderServer",
    "FakeResend",
    "FakeTwilio",
    "RecordedRequest",
    "Reply",
    "ResendEmail",
    "TwilioMessage",
    "max_in_window",
    "unused_local_url",
]
