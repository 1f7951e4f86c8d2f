"""TwilioTransport with the real SDK against the stand-in Twilio server."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.clock import FrozenClock
from scheduler.notify.transport import PermanentSendError, TransientSendError
from scheduler.notify.twilio import TwilioTransport
from scheduler.records import OutgoingMessage
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, MessageKind
from tests.fakes.fixtures import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeTwilio, Reply, unused_local_url

RECIPIENT_NATIONAL = "0412 345 678"
RECIPIENT = "+61412345678"
SENDER = f"whatsapp:{TWILIO_WHATSAPP_NUMBER}"
SHORT_TIMEOUT_SECONDS = 0.3


def settings_for(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "twilio_account_sid": TWILIO_ACCOUNT_SID,
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "twilio_whatsapp_number": TWILIO_WHATSAPP_NUMBER,
        "twilio_api_base_url": base_url,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def whatsapp(
    text: str = "Reminder: FE-2026-0042 with DJ Starlight tomorrow at 7:00 pm.",
    *,
    to: str = RECIPIENT,
    kind: MessageKind = MessageKind.BOOKING_REMINDER,
    content_sid: str | None = None,
    content_variables: dict[str, str] | None = None,
) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=uuid.uuid4(),
        channel=Channel.WHATSAPP,
        kind=kind,
        to=to,
        booking_reference="FE-2026-0042",
        text=text,
        content_sid=content_sid,
        content_variables=content_variables or {},
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(account_sid=TWILIO_ACCOUNT_SID, auth_token=TWILIO_AUTH_TOKEN, whatsapp_number=SENDER) as fake:
        yield fake


@pytest.fixture
async def make_transport(
    server: FakeTwilio,
) -> AsyncIterator[Callable[..., TwilioTransport]]:
    made: list[TwilioTransport] = []

    def make(base_url: str | None = None, **kwargs: Any) -> TwilioTransport:
        overrides = kwargs.pop("settings", {})
        transport = TwilioTransport(settings_for(base_url or server.url, **overrides), **kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def transport(make_transport: Callable[..., TwilioTransport]) -> TwilioTransport:
    return make_transport()


# Sending ---------------------------------------------------------------------


async def test_free_text_goes_to_whatsapp_e164_numbers(transport: TwilioTransport, server: FakeTwilio) -> None:
    sid = await transport.send(whatsapp("Hello from Flavor", to=RECIPIENT_NATIONAL))

    [accepted] = server.accepted
    assert sid == accepted.sid
    assert sid.startswith("SM")
    [request] = server.requests_to("send")
    assert request.form == {"To": f"whatsapp:{RECIPIENT}", "From": SENDER, "Body": "Hello from Flavor"}
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json"


async def test_template_sends_content_sid_and_json_variables_instead_of_a_body(
    transport: TwilioTransport, server: FakeTwilio
) -> None:
    variables = {"1": "Jane", "2": "FE-2026-0042", "3": "Saturday 5 December 2026, 7:00 pm"}

    await transport.send(whatsapp(content_sid="HX" + "a" * 32, content_variables=variables))

    [request] = server.requests_to("send")
    assert request.form is not None
    assert request.form["ContentSid"] == "HX" + "a" * 32
    assert json.loads(request.form["ContentVariables"]) == variables
    assert "Body" not in request.form


async def test_status_callback_is_requested_when_its_url_is_set(
    make_transport: Callable[..., TwilioTransport], server: FakeTwilio
) -> None:
    callback = "https://scheduler.example.com/api/twilio/status"
    transport = make_transport(settings={"twilio_status_callback_url": callback})

    await transport.send(whatsapp())

    assert server.accepted[0].status_callback == callback


async def test_an_unusable_recipient_fails_for_good_without_a_request(
    transport: TwilioTransport, server: FakeTwilio
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await transport.send(whatsapp(to="0412 345"))

    assert server.requests == []
    assert "0412 345" not in caught.value.reason


async def test_an_invalid_sender_number_is_refused_with_the_settings() -> None:
    with pytest.raises(ValueError, match="twilio_whatsapp_number"):
        TwilioTransport(settings_for("http://127.0.0.1:9", twilio_whatsapp_number="12345"))


# Transient failures --------------------------------------------------------------


async def test_a_5xx_is_transient_and_sent_once(transport: TwilioTransport, server: FakeTwilio) -> None:
    server.script(Reply.twilio_error(500, 20500, "Internal Server Error"))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(whatsapp())

    assert not caught.value.ambiguous
    assert caught.value.retry_after_seconds is None
    assert len(server.requests_to("send")) == 1  # the SDK did not retry on its own
    assert server.accepted == []
    await transport.send(whatsapp())
    assert len(server.accepted) == 1


async def test_a_429_carries_retry_after_in_seconds(transport: TwilioTransport, server: FakeTwilio) -> None:
    server.script(Reply.twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "7"}))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.retry_after_seconds == 7.0
    assert caught.value.code == "20429"


async def test_a_429_carries_retry_after_given_as_an_http_date(
    make_transport: Callable[..., TwilioTransport], server: FakeTwilio
) -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 3, 0, tzinfo=UTC))
    transport = make_transport(clock=clock)
    later = format_datetime(clock.now() + timedelta(seconds=90), usegmt=True)
    server.script(Reply(503, body="<html>busy</html>", headers={"Retry-After": later}))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.retry_after_seconds == 90.0


async def test_concurrent_sends_each_see_their_own_answer(transport: TwilioTransport, server: FakeTwilio) -> None:
    server.latency_seconds = 0.02
    server.script(Reply.twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "5"}))

    results = await asyncio.gather(
        *(transport.send(whatsapp(f"message {n}")) for n in range(6)), return_exceptions=True
    )

    failures = [result for result in results if isinstance(result, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], TransientSendError)
    assert failures[0].retry_after_seconds == 5.0
    assert len(server.accepted) == 5


async def test_a_refused_connection_is_transient_and_not_ambiguous(
    make_transport: Callable[..., TwilioTransport],
) -> None:
    transport = make_transport(base_url=unused_local_url())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(whatsapp())

    assert not caught.value.ambiguous
    assert "cannot connect" in caught.value.reason


async def test_no_answer_within_the_timeout_is_ambiguous(
    make_transport: Callable[..., TwilioTransport], server: FakeTwilio
) -> None:
    transport = make_transport(request_timeout_seconds=SHORT_TIMEOUT_SECONDS)
    server.script(Reply.never())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.ambiguous
    assert server.requests[0].answer == "hang"


async def test_accepted_then_timed_out_is_found_instead_of_sent_twice(
    make_transport: Callable[..., TwilioTransport], server: FakeTwilio
) -> None:
    transport = make_transport(request_timeout_seconds=SHORT_TIMEOUT_SECONDS)
    message = whatsapp()
    since = datetime.now(UTC)
    server.script(Reply.accept_then_hang())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(message)

    assert caught.value.ambiguous
    assert await transport.find_sent(message, since) == server.accepted[0].sid


async def test_accepted_then_dropped_is_ambiguous_and_then_found(
    transport: TwilioTransport, server: FakeTwilio
) -> None:
    message = whatsapp()
    since = datetime.now(UTC)
    server.script(Reply.accept_then_drop())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(message)

    assert caught.value.ambiguous
    [accepted] = server.accepted
    assert await transport.find_sent(message, since) == accepted.sid
    [listing] = server.requests_to("list")
    assert listing.query["To"] == f"whatsapp:{RECIPIENT}"
    assert listing.query["From"] == SENDER
    assert "DateSent>" in listing.query  # Twilio's DateSent>= filter


# find_sent ---------------------------------------------------------------------


async def test_find_sent_ignores_other_recipients_other_texts_and_older_messages(
    transport: TwilioTransport, server: FakeTwilio
) -> None:
    message = whatsapp("the one we look for")
    since = datetime.now(UTC)
    await transport.send(whatsapp("another text"))
    await transport.send(whatsapp("the one we look for", to="+61498765432"))

    assert await transport.find_sent(message, since) is None
    await transport.send(message)
    assert await transport.find_sent(message, since + timedelta(hours=1)) is None
    assert await transport.find_sent(message, since) == server.accepted[-1].sid


async def test_find_sent_takes_since_in_any_time_zone(transport: TwilioTransport, server: FakeTwilio) -> None:
    message = whatsapp()
    await transport.send(message)
    perth = datetime.now(UTC).astimezone(ZoneInfo("Australia/Perth"))

    assert await transport.find_sent(message, perth - timedelta(seconds=1)) is not None
    assert await transport.find_sent(message, perth + timedelta(minutes=10)) is None


async def test_find_sent_recognises_a_template_by_its_variables(transport: TwilioTransport, server: FakeTwilio) -> None:
    sid = "HX" + "b" * 32
    server.templates[sid] = "Hi {{1}}, your booking {{2}} is on {{3}}."
    variables = {"1": "Jane", "2": "FE-2026-0042", "3": "Saturday 5 December 2026, 7:00 pm"}
    message = whatsapp(content_sid=sid, content_variables=variables)
    other = whatsapp(content_sid=sid, content_variables={**variables, "2": "FE-2026-0043"})
    since = datetime.now(UTC)

    await transport.send(message)

    assert await transport.find_sent(message, since) == server.accepted[0].sid
    assert await transport.find_sent(other, since) is None


# Permanent failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (21211, "not a valid phone number"),
        (21610, "opted out"),
        (63016, "an approved template is needed (set TWILIO_CONTENT_SID_PAYMENT_REMINDER)"),
        (21408, "not permitted to send to the recipient's region"),
        (21614, "cannot receive this message"),
    ],
)
async def test_refusals_are_permanent_with_a_plain_reason(
    transport: TwilioTransport, server: FakeTwilio, code: int, expected: str
) -> None:
    server.script(Reply.twilio_error(400, code, f"The 'To' number whatsapp:{RECIPIENT} is bad"))

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(whatsapp(kind=MessageKind.PAYMENT_REMINDER))

    assert caught.value.code == str(code)
    assert expected in caught.value.reason
    assert "412345678" not in caught.value.reason
    assert caught.value.__suppress_context__  # the SDK's text, with the number, is not chained


async def test_another_4xx_is_permanent_and_its_message_masked(transport: TwilioTransport, server: FakeTwilio) -> None:
    server.script(Reply.twilio_error(400, 21602, f"Message body is required for whatsapp:{RECIPIENT}"))

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.code == "21602"
    assert "Message body is required" in caught.value.reason
    assert "+61 4** *** 678" in caught.value.reason
    assert RECIPIENT not in caught.value.reason


async def test_a_sender_that_is_not_on_the_account_is_permanent_and_names_the_setting(
    transport: TwilioTransport, server: FakeTwilio
) -> None:
    server.whatsapp_number = "whatsapp:+61400000000"

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.code == "63007"
    assert "TWILIO_WHATSAPP_NUMBER" in caught.value.reason


async def test_wrong_credentials_on_send_are_permanent_and_secret_free(
    make_transport: Callable[..., TwilioTransport],
) -> None:
    transport = make_transport(settings={"twilio_auth_token": "a-wrong-token-value"})

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(whatsapp())

    assert caught.value.reason == "Twilio rejected the credentials (HTTP 401)"


# check ---------------------------------------------------------------------------


async def test_check_fetches_the_account_and_masks_it(transport: TwilioTransport, server: FakeTwilio) -> None:
    result = await transport.check()

    assert result == "account AC01…cdef active"
    assert TWILIO_AUTH_TOKEN not in result
    [request] = server.requests_to("account")
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}.json"


async def test_check_with_a_wrong_token_names_the_401(
    make_transport: Callable[..., TwilioTransport],
) -> None:
    transport = make_transport(settings={"twilio_auth_token": "a-wrong-token-value"})

    with pytest.raises(PermanentSendError) as caught:
        await transport.check()

    assert caught.value.reason == "Twilio rejected the credentials (HTTP 401)"
    assert caught.value.code == "20003"


async def test_check_fails_for_a_suspended_account(transport: TwilioTransport, server: FakeTwilio) -> None:
    server.account_status = "suspended"

    with pytest.raises(PermanentSendError, match="suspended"):
        await transport.check()


async def test_check_without_a_server_is_transient(
    make_transport: Callable[..., TwilioTransport],
) -> None:
    transport = make_transport(base_url=unused_local_url())

    with pytest.raises(TransientSendError, match="cannot connect to Twilio"):
        await transport.check()


# Plumbing ------------------------------------------------------------------------


async def test_region_and_edge_variables_do_not_redirect_requests(
    monkeypatch: pytest.MonkeyPatch,
    make_transport: Callable[..., TwilioTransport],
    server: FakeTwilio,
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    transport = make_transport()

    await transport.send(whatsapp())
    await transport.check()

    assert len(server.accepted) == 1
    assert len(server.requests_to("account")) == 1


async def test_the_sdk_logs_no_recipient_numbers(
    transport: TwilioTransport, server: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    message = whatsapp()

    await transport.send(message)
    await transport.find_sent(message, datetime.now(UTC) - timedelta(minutes=1))

    assert "412345678" not in caplog.text
    assert TWILIO_AUTH_TOKEN not in caplog.text


async def test_every_call_is_reported_with_its_outcome(
    make_transport: Callable[..., TwilioTransport], server: FakeTwilio
) -> None:
    seen: list[tuple[str, str, float]] = []
    transport = make_transport(on_request=lambda *args: seen.append(args))
    server.script(Reply(502), Reply.twilio_error(400, 21211))

    for _ in range(2):
        with pytest.raises((TransientSendError, PermanentSendError)):
            await transport.send(whatsapp())
    await transport.send(whatsapp())
    await transport.check()

    assert [(provider, outcome) for provider, outcome, _ in seen] == [
        ("twilio", "transient_error"),
        ("twilio", "permanent_error"),
        ("twilio", "success"),
        ("twilio", "success"),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


async def test_aclose_closes_the_session_and_is_safe_to_repeat(server: FakeTwilio) -> None:
    transport = TwilioTransport(settings_for(server.url))
    await transport.aclose()  # never used: nothing to close

    await transport.send(whatsapp())
    session = transport._http.session  # type: ignore[union-attr]
    await transport.aclose()
    await transport.aclose()

    assert session.closed
