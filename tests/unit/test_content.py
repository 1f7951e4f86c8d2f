"""Message wording: dates in the platform's time zone, money, lead times, escaping, odd names."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from zoneinfo import ZoneInfo

import pytest

from scheduler.notify import content
from scheduler.notify.content import ContentError, Renderer, format_aud, format_lead, format_when
from scheduler.records import BookingFacts
from scheduler.vocabulary import Channel, MessageKind, Role

PERTH = ZoneInfo("Australia/Perth")
SYDNEY = ZoneInfo("Australia/Sydney")
EVENT = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)  # 7:00 pm in Perth
EVENT_TEXT = "Saturday 5 December 2026, 7:00 pm"
NOW = EVENT - timedelta(hours=23)
VENUE = "The Rooftop, 12 Hay St, Perth"

FACTS = BookingFacts(
    reference="FE-2026-0042",
    event_type="Birthday party",
    event_date=EVENT,
    duration_hours=Decimal("2.00"),
    venue=VENUE,
    total_amount=Decimal("1250.00"),
    deposit_amount=Decimal("800.00"),
    client_first_name="Jane",
    client_last_name="Citizen",
    performer_stage_name="DJ Starlight",
    performer_first_name="Sam",
)

# Every message each role receives: payment reminders go to the client only.
CASES = [
    (kind, channel, role)
    for kind in MessageKind
    for channel in Channel
    for role in Role
    if not (kind is MessageKind.PAYMENT_REMINDER and role is Role.PERFORMER)
]


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(PERTH)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def all_parts(renderer: Renderer, kind: MessageKind, role: Role, facts: BookingFacts) -> list[str]:
    whatsapp = renderer.render(kind, Channel.WHATSAPP, role, facts, NOW)
    email = renderer.render(kind, Channel.EMAIL, role, facts, NOW)
    notice = renderer.render_in_app(kind, role, facts, NOW)
    assert email.subject is not None
    assert email.html is not None
    return [whatsapp.text, email.subject, email.text, email.html, notice.message]


# --- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "tz", "offset_hours", "expected"),
    [
        ("2026-12-05T11:00", PERTH, 8, "Saturday 5 December 2026, 7:00 pm"),
        ("2026-06-20T04:00", PERTH, 8, "Saturday 20 June 2026, 12:00 pm"),
        ("2026-06-20T16:00", PERTH, 8, "Sunday 21 June 2026, 12:00 am"),
        ("2026-06-20T11:05", PERTH, 8, "Saturday 20 June 2026, 7:05 pm"),
        ("2026-06-20T16:30", PERTH, 8, "Sunday 21 June 2026, 12:30 am"),
        ("2026-06-20T01:09", PERTH, 8, "Saturday 20 June 2026, 9:09 am"),
        # Daylight saving ends in Sydney on Sunday 5 April 2026 at 3:00 AEDT -> 2:00 AEST.
        ("2026-04-04T09:00", SYDNEY, 11, "Saturday 4 April 2026, 8:00 pm"),
        ("2026-04-05T09:00", SYDNEY, 10, "Sunday 5 April 2026, 7:00 pm"),
        ("2026-04-04T15:30", SYDNEY, 11, "Sunday 5 April 2026, 2:30 am"),  # first 2:30
        ("2026-04-04T16:30", SYDNEY, 10, "Sunday 5 April 2026, 2:30 am"),  # second 2:30
        # Daylight saving starts in Sydney on Sunday 4 October 2026 at 2:00 AEST -> 3:00 AEDT.
        ("2026-10-03T09:00", SYDNEY, 10, "Saturday 3 October 2026, 7:00 pm"),
        ("2026-10-04T09:00", SYDNEY, 11, "Sunday 4 October 2026, 8:00 pm"),
        ("2026-10-03T15:59", SYDNEY, 10, "Sunday 4 October 2026, 1:59 am"),
        ("2026-10-03T16:00", SYDNEY, 11, "Sunday 4 October 2026, 3:00 am"),
    ],
)
def test_format_when_in_time_zone(moment: str, tz: ZoneInfo, offset_hours: int, expected: str) -> None:
    event = utc(moment)
    assert event.astimezone(tz).utcoffset() == timedelta(hours=offset_hours)
    assert format_when(event, tz) == expected


def test_format_when_accepts_any_aware_datetime() -> None:
    event = datetime(2026, 12, 5, 19, 0, tzinfo=PERTH)
    assert format_when(event, SYDNEY) == "Saturday 5 December 2026, 10:00 pm"


def test_format_when_refuses_naive_datetime() -> None:
    with pytest.raises(ContentError, match="time zone"):
        format_when(datetime(2026, 12, 5, 19, 0), PERTH)


def test_renderer_writes_dates_in_its_time_zone() -> None:
    sydney = Renderer(SYDNEY)
    facts = dataclasses.replace(FACTS, event_date=utc("2026-04-05T09:00"))
    message = sydney.render(MessageKind.BOOKING_REMINDER, Channel.WHATSAPP, Role.CLIENT, facts, utc("2026-04-04T12:00"))
    assert "Sunday 5 April 2026, 7:00 pm" in message.text
    assert sydney.format_when(utc("2026-04-04T09:00")) == "Saturday 4 April 2026, 8:00 pm"


# --- money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("1250", "$1,250.00"),
        ("1250.5", "$1,250.50"),
        ("0.5", "$0.50"),
        ("0", "$0.00"),
        ("999.999", "$1,000.00"),
        ("0.005", "$0.01"),
        ("1234567.891", "$1,234,567.89"),
        ("-5", "-$5.00"),
        ("-1500.25", "-$1,500.25"),
        ("-0.001", "$0.00"),
    ],
)
def test_format_aud(amount: str, expected: str) -> None:
    assert format_aud(Decimal(amount)) == expected


@pytest.mark.parametrize("amount", ["NaN", "Infinity"])
def test_format_aud_refuses_non_numbers(amount: str) -> None:
    with pytest.raises(ContentError):
        format_aud(Decimal(amount))


# --- lead time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "expected"),
    [
        (timedelta(seconds=10), "in 1 minute"),
        (timedelta(minutes=1), "in 1 minute"),
        (timedelta(minutes=45), "in 45 minutes"),
        (timedelta(minutes=59, seconds=29), "in 59 minutes"),
        (timedelta(minutes=59, seconds=30), "in 1 hour"),
        (timedelta(minutes=89), "in 1 hour"),
        (timedelta(minutes=90), "in 2 hours"),
        (timedelta(hours=23), "in 23 hours"),
        (timedelta(hours=23, minutes=40), "in 24 hours"),
        (timedelta(hours=24), "in 24 hours"),
        (timedelta(hours=24, minutes=29), "in 24 hours"),
        (timedelta(hours=24, minutes=30), "in 1 day and 1 hour"),
        (timedelta(hours=47, minutes=45), "in 2 days"),
        (timedelta(days=2), "in 2 days"),
        (timedelta(days=2, hours=3), "in 2 days and 3 hours"),
        (timedelta(days=3), "in 3 days"),
    ],
)
def test_format_lead(lead: timedelta, expected: str) -> None:
    assert format_lead(NOW + lead, NOW) == expected


# --- every message -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "channel", "role"), CASES)
def test_every_message_names_the_booking(renderer: Renderer, kind: MessageKind, channel: Channel, role: Role) -> None:
    message = renderer.render(kind, channel, role, FACTS, NOW)
    parts = [message.text] if channel is not Channel.EMAIL else [message.text, message.html or ""]
    for part in parts:
        for needed in ("FE-2026-0042", "DJ Starlight", VENUE, EVENT_TEXT):
            assert needed in part
    if channel is not Channel.EMAIL:  # WhatsApp, and the SMS sent in its place: the same text
        assert message.subject is None
        assert message.html is None
        assert len(message.text) < 1600
    else:
        assert message.subject
        assert "FE-2026-0042" in message.subject
        assert "\n" not in message.subject
        assert message.html is not None
        assert message.html.startswith("<!DOCTYPE html>")
        assert message.content_variables == {}


@pytest.mark.parametrize(("kind", "role"), sorted({(k, r) for k, _, r in CASES}))
def test_in_app_notice(renderer: Renderer, kind: MessageKind, role: Role) -> None:
    notice = renderer.render_in_app(kind, role, FACTS, NOW)
    assert 0 < len(notice.title) <= 40
    assert "\n" not in notice.message
    assert notice.message.endswith(".")
    for needed in ("FE-2026-0042", "DJ Starlight", EVENT_TEXT):
        assert needed in notice.message


def test_reminders_say_how_long_until_the_event(renderer: Renderer) -> None:
    for kind, channel, role in CASES:
        if kind is MessageKind.BOOKING_CANCELLED:
            continue
        message = renderer.render(kind, channel, role, FACTS, NOW)
        assert "in 23 hours" in message.text
        assert "in 23 hours" in renderer.render_in_app(kind, role, FACTS, NOW).message


def test_booking_reminder_wording_differs_by_role(renderer: Renderer) -> None:
    def text(role: Role) -> str:
        kind = MessageKind.BOOKING_REMINDER
        return renderer.render(kind, Channel.WHATSAPP, role, FACTS, NOW).text

    client, performer = text(Role.CLIENT), text(Role.PERFORMER)
    assert client.startswith("Hi Jane,")
    assert performer.startswith("Hi Sam,")
    assert "Client: Jane" in performer
    assert "Birthday party" in performer
    assert "Client:" not in client
    assert "Citizen" not in client + performer  # last names stay out of messages


def test_payment_reminder_states_the_balance(renderer: Renderer) -> None:
    kind = MessageKind.PAYMENT_REMINDER
    whatsapp = renderer.render(kind, Channel.WHATSAPP, Role.CLIENT, FACTS, NOW)
    email = renderer.render(kind, Channel.EMAIL, Role.CLIENT, FACTS, NOW)
    for text in (whatsapp.text, email.text):
        assert "Total: $1,250.00" in text
        assert "Deposit paid: $800.00" in text
        assert "Balance due: $450.00" in text
    assert "$450.00" in (email.subject or "")
    assert "$450.00" in (email.html or "")
    assert "$450.00" in renderer.render_in_app(kind, Role.CLIENT, FACTS, NOW).message


@pytest.mark.parametrize(
    ("total", "deposit", "reason"),
    [
        ("800.00", "800.00", "no balance"),
        ("500.00", "800.00", "no balance"),
        (None, "800.00", "total_amount"),
        ("1250.00", None, "deposit_amount"),
    ],
)
def test_payment_reminder_needs_a_positive_balance(
    renderer: Renderer, total: str | None, deposit: str | None, reason: str
) -> None:
    facts = dataclasses.replace(
        FACTS,
        total_amount=None if total is None else Decimal(total),
        deposit_amount=None if deposit is None else Decimal(deposit),
    )
    with pytest.raises(ContentError, match=reason):
        renderer.render(MessageKind.PAYMENT_REMINDER, Channel.EMAIL, Role.CLIENT, facts, NOW)


def test_payment_reminder_is_for_the_client_only(renderer: Renderer) -> None:
    with pytest.raises(ContentError, match="client"):
        renderer.render(MessageKind.PAYMENT_REMINDER, Channel.WHATSAPP, Role.PERFORMER, FACTS, NOW)


def test_balance_property() -> None:
    assert FACTS.balance == Decimal("450.00")
    assert dataclasses.replace(FACTS, deposit_amount=None).balance is None
    assert dataclasses.replace(FACTS, total_amount=None).balance is None


def test_cancellation_notices_explain_and_differ_by_role(renderer: Renderer) -> None:
    kind = MessageKind.BOOKING_CANCELLED
    for channel in Channel:
        client = renderer.render(kind, channel, Role.CLIENT, FACTS, NOW).text
        performer = renderer.render(kind, channel, Role.PERFORMER, FACTS, NOW).text
        for text in (client, performer):
            assert "cancelled automatically" in text
            assert "deposit was not received in time" in text or "receive the deposit" in text
        assert "new booking" in client
        assert "free again" in performer


def test_cancellation_of_a_past_event_still_renders(renderer: Renderer) -> None:
    later = EVENT + timedelta(days=1)
    message = renderer.render(MessageKind.BOOKING_CANCELLED, Channel.WHATSAPP, Role.CLIENT, FACTS, later)
    assert EVENT_TEXT in message.text


@pytest.mark.parametrize("kind", [MessageKind.BOOKING_REMINDER, MessageKind.PAYMENT_REMINDER])
def test_reminder_for_an_event_already_started_is_refused(renderer: Renderer, kind: MessageKind) -> None:
    with pytest.raises(ContentError, match="already started"):
        renderer.render(kind, Channel.WHATSAPP, Role.CLIENT, FACTS, EVENT)


@pytest.mark.parametrize(("kind", "channel", "role"), CASES)
def test_missing_event_date_is_a_content_error(
    renderer: Renderer, kind: MessageKind, channel: Channel, role: Role
) -> None:
    facts = dataclasses.replace(FACTS, event_date=None)
    with pytest.raises(ContentError, match="event_date") as caught:
        renderer.render(kind, channel, role, facts, NOW)
    for personal in ("Jane", "Sam", "DJ Starlight", "Hay St"):
        assert personal not in str(caught.value)


def test_missing_reference_is_a_content_error(renderer: Renderer) -> None:
    facts = dataclasses.replace(FACTS, reference="  ")
    with pytest.raises(ContentError, match="reference"):
        renderer.render(MessageKind.BOOKING_REMINDER, Channel.EMAIL, Role.CLIENT, facts, NOW)


# --- missing and hostile data ------------------------------------------------------------------


def test_fallbacks_for_missing_names_and_venue(renderer: Renderer) -> None:
    no_stage_name = dataclasses.replace(FACTS, performer_stage_name=None)
    message = renderer.render(MessageKind.BOOKING_REMINDER, Channel.WHATSAPP, Role.CLIENT, no_stage_name, NOW)
    assert "Sam is booked" in message.text

    bare = dataclasses.replace(
        FACTS,
        performer_stage_name=" ",
        performer_first_name=None,
        venue=None,
        client_first_name=None,
        event_type=None,
        duration_hours=None,
    )
    for kind, channel, role in CASES:
        message = renderer.render(kind, channel, role, bare, NOW)
        assert "the venue on your booking" in message.text
        if role is Role.CLIENT:
            assert message.text.startswith("Hi there")
            assert "your performer" in message.text
        assert "Duration" not in message.text
        assert all(value for value in message.content_variables.values())


def test_html_part_escapes_user_data_and_text_part_does_not(renderer: Renderer) -> None:
    facts = dataclasses.replace(
        FACTS,
        performer_stage_name="<script>alert(1)</script>",
        client_first_name="Tom & Jerry",
        venue="Bar <b>One</b> & Grill",
    )
    for kind, _, role in CASES:
        email = renderer.render(kind, Channel.EMAIL, role, facts, NOW)
        whatsapp = renderer.render(kind, Channel.WHATSAPP, role, facts, NOW)
        html = email.html or ""
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "Bar &lt;b&gt;One&lt;/b&gt; &amp; Grill" in html
        for text in (email.text, email.subject or "", whatsapp.text):
            assert "&lt;" not in text
            assert "&amp;" not in text
            assert "&#39;" not in text
        assert "<script>alert(1)</script>" in email.text
        assert "Bar <b>One</b> & Grill" in whatsapp.text
        assert whatsapp.content_variables["3"] == "<script>alert(1)</script>"
    client_reminder = renderer.render(MessageKind.BOOKING_REMINDER, Channel.EMAIL, Role.CLIENT, facts, NOW)
    assert "Hi Tom &amp; Jerry," in (client_reminder.html or "")
    assert "Hi Tom & Jerry," in client_reminder.text


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize("char", ["x", "\N{DANCER}"])
def test_very_long_data_is_truncated_everywhere(renderer: Renderer, char: str) -> None:
    long = char * 10_000
    facts = dataclasses.replace(
        FACTS,
        reference=long,
        event_type=long,
        venue=long,
        client_first_name=long,
        performer_stage_name=long,
        performer_first_name=long,
    )
    for kind, channel, role in CASES:
        message = renderer.render(kind, channel, role, facts, NOW)
        assert utf16_units(message.text) < 1600
        assert char * 151 not in message.text + (message.html or "")
        assert "\N{HORIZONTAL ELLIPSIS}" in message.text
        assert all(len(value) <= 150 for value in message.content_variables.values())
        if message.subject is not None:
            assert len(message.subject) < 400
        notice = renderer.render_in_app(kind, role, facts, NOW)
        assert len(notice.message) < 1000


def test_emoji_and_right_to_left_text_pass_through(renderer: Renderer) -> None:
    stage_name = "\N{DANCER}\N{EMOJI MODIFIER FITZPATRICK TYPE-4} \u0644\u064a\u0644\u0649"
    client = "\u05d3\u05e0\u05d4\u200f"  # Hebrew with a right-to-left mark
    venue = "\u0642\u0627\u0639\u0629 \u0627\u0644\u0648\u0631\u062f \N{SPARKLES}"
    facts = dataclasses.replace(FACTS, performer_stage_name=stage_name, client_first_name=client, venue=venue)
    for kind, channel, role in CASES:
        message = renderer.render(kind, channel, role, facts, NOW)
        for part in (message.text, message.html) if message.html else (message.text,):
            assert stage_name in part
            assert venue in part
        if channel is Channel.WHATSAPP and role is Role.CLIENT:
            assert message.content_variables["1"] == client


def test_whitespace_and_control_characters_are_flattened(renderer: Renderer) -> None:
    facts = dataclasses.replace(FACTS, venue="12 Hay St\r\n\tPerth\x00 WA", performer_stage_name="DJ\n\nStarlight")
    email = renderer.render(MessageKind.BOOKING_REMINDER, Channel.EMAIL, Role.CLIENT, facts, NOW)
    assert "Where: 12 Hay St Perth WA" in email.text
    assert "\x00" not in email.text
    assert email.subject is not None
    assert "DJ Starlight" in email.subject


# --- approved templates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "role", "expected"),
    [
        (
            MessageKind.BOOKING_REMINDER,
            Role.CLIENT,
            ["Jane", "FE-2026-0042", "DJ Starlight", EVENT_TEXT, VENUE, "in 23 hours"],
        ),
        (
            MessageKind.BOOKING_REMINDER,
            Role.PERFORMER,
            ["Sam", "FE-2026-0042", "DJ Starlight", EVENT_TEXT, VENUE, "in 23 hours"],
        ),
        (
            MessageKind.PAYMENT_REMINDER,
            Role.CLIENT,
            ["Jane", "FE-2026-0042", "DJ Starlight", EVENT_TEXT, VENUE, "$450.00", "in 23 hours"],
        ),
        (
            MessageKind.BOOKING_CANCELLED,
            Role.PERFORMER,
            ["Sam", "FE-2026-0042", "DJ Starlight", EVENT_TEXT, VENUE],
        ),
    ],
)
def test_content_variables(renderer: Renderer, kind: MessageKind, role: Role, expected: list[str]) -> None:
    message = renderer.render(kind, Channel.WHATSAPP, role, FACTS, NOW)
    assert message.content_variables == {str(i): v for i, v in enumerate(expected, 1)}


def test_every_kind_has_every_template() -> None:
    folder = files("scheduler.notify") / "templates"
    parts = ("whatsapp.txt", "email.txt", "email.html", "subject.txt", "in_app_title.txt")
    for kind in MessageKind:
        for part in (*parts, "in_app.txt"):
            assert (folder / f"{kind.value}.{part}").is_file()


def test_whatsapp_text_over_the_limit_is_refused(renderer: Renderer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "WHATSAPP_MAX_UNITS", 100)
    with pytest.raises(ContentError, match="too long"):
        renderer.render(MessageKind.BOOKING_REMINDER, Channel.WHATSAPP, Role.CLIENT, FACTS, NOW)
