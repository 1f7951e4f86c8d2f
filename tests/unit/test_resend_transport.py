"""ResendTransport with the real SDK against the stand-in Resend server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from scheduler.clock import FrozenClock
from scheduler.notify.resend import ResendTransport
from scheduler.notify.transport import AlreadySentError, PermanentSendError, TransientSendError
from scheduler.records import OutgoingMessage
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, MessageKind
from tests.fakes.fixtures import EMAIL_FROM, RESEND_API_KEY
from tests.fakes.providers import FakeResend, Reply, unused_local_url

RECIPIENT = "jane.client@example.com"
SHORT_TIMEOUT_SECONDS = 0.3


def settings_for(api_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "resend_api_key": RESEND_API_KEY,
        "resend_api_url": api_url,
        "email_from": EMAIL_FROM,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def email(
    text: str = "Your booking FE-2026-0042 with DJ Starlight is tomorrow.",
    *,
    delivery_id: uuid.UUID | None = None,
    to: str = RECIPIENT,
    subject: str | None = "Reminder: FE-2026-0042 tomorrow",
) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=delivery_id or uuid.uuid4(),
        channel=Channel.EMAIL,
        kind=MessageKind.BOOKING_REMINDER,
        to=to,
        booking_reference="FE-2026-0042",
        text=text,
        subject=subject,
        html=f"<p>{text}</p>",
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeResend]:
    async with FakeResend(api_key=RESEND_API_KEY) as fake:
        yield fake


@pytest.fixture
async def make_transport(server: FakeResend) -> AsyncIterator[Callable[..., ResendTransport]]:
    made: list[ResendTransport] = []

    def make(api_url: str | None = None, **kwargs: Any) -> ResendTransport:
        overrides = kwargs.pop("settings", {})
        transport = ResendTransport(settings_for(api_url or server.url, **overrides), **kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def transport(make_transport: Callable[..., ResendTransport]) -> ResendTransport:
    return make_transport()


# Sending ---------------------------------------------------------------------


async def test_an_email_is_posted_with_both_parts_and_the_delivery_id_as_key(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    transport = make_transport(settings={"email_reply_to": "help@flavorentertainers.com.au"})
    message = email()

    email_id = await transport.send(message)

    [accepted] = server.accepted
    assert email_id == accepted.id
    [request] = server.requests_to("send")
    assert request.headers["Authorization"] == f"Bearer {RESEND_API_KEY}"
    assert request.headers["Idempotency-Key"] == str(message.delivery_id)
    assert request.json["from"] == EMAIL_FROM
    assert request.json["to"] == [RECIPIENT]
    assert request.json["subject"] == message.subject
    assert request.json["text"] == message.text
    assert request.json["html"] == message.html
    assert request.json["reply_to"] == "help@flavorentertainers.com.au"


async def test_no_reply_to_unless_configured(transport: ResendTransport, server: FakeResend) -> None:
    await transport.send(email())

    assert "reply_to" not in server.requests[0].json


async def test_an_email_without_a_subject_fails_for_good_without_a_request(
    transport: ResendTransport, server: FakeResend
) -> None:
    with pytest.raises(PermanentSendError):
        await transport.send(email(subject=None))

    assert server.requests == []


async def test_a_retry_after_a_5xx_uses_the_same_idempotency_key(
    transport: ResendTransport, server: FakeResend
) -> None:
    message = email()
    server.script(Reply.resend_error(500, "application_error", "Something went wrong"))

    with pytest.raises(TransientSendError):
        await transport.send(message)
    await transport.send(message)

    keys = {request.headers["Idempotency-Key"] for request in server.requests_to("send")}
    assert keys == {str(message.delivery_id)}
    assert len(server.accepted) == 1


async def test_a_lost_answer_is_resent_safely_and_returns_the_first_id(
    transport: ResendTransport, server: FakeResend
) -> None:
    message = email()
    server.script(Reply.accept_then_drop())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(message)
    assert caught.value.ambiguous
    assert await transport.find_sent(message, datetime.now(UTC)) is None

    email_id = await transport.send(message)

    [accepted] = server.accepted
    assert email_id == accepted.id
    assert len(server.requests_to("send")) == 2


async def test_a_resend_from_another_process_is_recognised_by_the_key(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    message = email()
    first = await make_transport().send(message)

    second = await make_transport().send(message)

    assert first == second
    assert len(server.accepted) == 1


# Failures ----------------------------------------------------------------------


async def test_a_validation_error_is_permanent_and_masks_the_address(
    transport: ResendTransport, server: FakeResend
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await transport.send(email(to="jane.client@example"))

    assert caught.value.code == "validation_error"
    assert "HTTP 422" in caught.value.reason
    assert "jane.client" not in caught.value.reason


async def test_a_scripted_422_names_the_problem_without_the_address(
    transport: ResendTransport, server: FakeResend
) -> None:
    server.script(Reply.resend_error(422, "validation_error", f"Invalid `to` field: {RECIPIENT}"))

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(email())

    assert "Invalid `to` field: j***@example.com" in caught.value.reason
    assert RECIPIENT not in caught.value.reason
    assert caught.value.__suppress_context__


async def test_the_same_key_with_another_payload_means_resend_already_sent_it(
    transport: ResendTransport, server: FakeResend
) -> None:
    delivery_id = uuid.uuid4()
    await transport.send(email("first wording", delivery_id=delivery_id))

    with pytest.raises(AlreadySentError) as caught:
        await transport.send(email("second wording", delivery_id=delivery_id))

    assert caught.value.code == "invalid_idempotent_request"
    assert "already sent" in caught.value.reason
    assert len(server.accepted) == 1


async def test_a_409_for_a_request_still_in_flight_is_transient(transport: ResendTransport, server: FakeResend) -> None:
    server.script(Reply.resend_error(409, "concurrent_idempotent_requests", "In progress"))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert caught.value.ambiguous


async def test_a_429_carries_retry_after_in_seconds(transport: ResendTransport, server: FakeResend) -> None:
    server.script(Reply.resend_error(429, "rate_limit_exceeded", "Too many requests", {"retry-after": "2"}))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert caught.value.retry_after_seconds == 2.0
    assert caught.value.code == "rate_limit_exceeded"


async def test_a_daily_quota_429_carries_retry_after_as_an_http_date(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 3, 0, tzinfo=UTC))
    transport = make_transport(clock=clock)
    tomorrow = format_datetime(clock.now() + timedelta(hours=21), usegmt=True)
    server.script(Reply.resend_error(429, "daily_quota_exceeded", "Quota", {"Retry-After": tomorrow}))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert caught.value.retry_after_seconds == 21 * 3600.0


async def test_an_html_502_from_a_proxy_is_transient(transport: ResendTransport, server: FakeResend) -> None:
    server.script(Reply(502, body="<html><body>Bad gateway</body></html>"))

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert "HTTP 502" in caught.value.reason


async def test_a_refused_connection_is_transient(
    make_transport: Callable[..., ResendTransport],
) -> None:
    transport = make_transport(api_url=unused_local_url())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert caught.value.code == "network_error"
    assert not caught.value.ambiguous


async def test_no_answer_within_the_timeout_is_transient_and_ambiguous(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    transport = make_transport(request_timeout_seconds=SHORT_TIMEOUT_SECONDS)
    server.script(Reply.never())

    with pytest.raises(TransientSendError) as caught:
        await transport.send(email())

    assert caught.value.ambiguous


async def test_wrong_key_on_send_is_permanent_and_secret_free(
    make_transport: Callable[..., ResendTransport],
) -> None:
    transport = make_transport(settings={"resend_api_key": "re_wrong_key_value"})

    with pytest.raises(PermanentSendError) as caught:
        await transport.send(email())

    assert caught.value.reason == "Resend rejected the API key (HTTP 403 invalid_api_key)"


# check ---------------------------------------------------------------------------


async def test_check_lists_domains_and_confirms_the_sender_domain(
    transport: ResendTransport, server: FakeResend
) -> None:
    result = await transport.check()

    assert result == "API key accepted; sending domain flavorentertainers.com.au verified"
    assert RESEND_API_KEY not in result
    assert len(server.requests_to("domains")) == 1


async def test_check_with_a_wrong_key_names_the_problem(
    make_transport: Callable[..., ResendTransport],
) -> None:
    transport = make_transport(settings={"resend_api_key": "re_wrong_key_value"})

    with pytest.raises(PermanentSendError) as caught:
        await transport.check()

    assert caught.value.reason == "Resend rejected the API key (HTTP 403 invalid_api_key)"
    assert "re_wrong_key_value" not in caught.value.reason


async def test_check_passes_a_sending_only_key(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    server.sending_only_keys.add("re_sending_only_key")
    transport = make_transport(settings={"resend_api_key": "re_sending_only_key"})

    assert "sending access only" in await transport.check()


@pytest.mark.parametrize(
    ("domains", "expected"),
    [
        ({"flavorentertainers.com.au": "pending"}, "is pending in Resend"),
        ({"elsewhere.example": "verified"}, "is not a domain of this Resend account"),
    ],
)
async def test_check_fails_when_the_sender_domain_cannot_send(
    transport: ResendTransport, server: FakeResend, domains: dict[str, str], expected: str
) -> None:
    server.domains = domains

    with pytest.raises(PermanentSendError, match=expected):
        await transport.check()


async def test_check_without_a_server_is_transient(
    make_transport: Callable[..., ResendTransport],
) -> None:
    transport = make_transport(api_url=unused_local_url())

    with pytest.raises(TransientSendError):
        await transport.check()


# Plumbing ------------------------------------------------------------------------


async def test_two_transports_with_different_keys_do_not_mix_them_up(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    async with FakeResend(api_key="re_second_account_key") as other:
        first = make_transport()
        second = make_transport(api_url=other.url, settings={"resend_api_key": "re_second_account_key"})
        server.latency_seconds = other.latency_seconds = 0.01

        await asyncio.gather(
            *(first.send(email(f"a{n}")) for n in range(5)),
            *(second.send(email(f"b{n}")) for n in range(5)),
        )

        assert len(server.accepted) == 5
        assert len(other.accepted) == 5
        assert {request.headers["Authorization"] for request in other.requests} == {"Bearer re_second_account_key"}


async def test_every_call_is_reported_with_its_outcome(
    make_transport: Callable[..., ResendTransport], server: FakeResend
) -> None:
    seen: list[tuple[str, str, float]] = []
    transport = make_transport(on_request=lambda *args: seen.append(args))
    server.script(Reply(503), Reply.resend_error(422, "validation_error"))

    for _ in range(2):
        with pytest.raises((TransientSendError, PermanentSendError)):
            await transport.send(email())
    await transport.send(email())

    assert [(provider, outcome) for provider, outcome, _ in seen] == [
        ("resend", "transient_error"),
        ("resend", "permanent_error"),
        ("resend", "success"),
    ]


async def test_aclose_is_safe_before_and_after_use(server: FakeResend) -> None:
    transport = ResendTransport(settings_for(server.url))
    await transport.aclose()

    await transport.send(email())
    await transport.aclose()
    await transport.aclose()
