"""The words of every message: booking facts in, WhatsApp text, email parts and in-app notices out.

All wording lives in the Jinja2 templates under `templates/`; this module cleans the booking's
data, formats dates, money and lead times, and picks the template for kind, channel and role.

Approved WhatsApp templates (`TWILIO_CONTENT_SID_<KIND>`) receive `content_variables`, plain
text, never empty, numbered as Twilio's `{{1}}`, `{{2}}`, ...; one approved template serves
both roles, so only "1" changes with the recipient:

| key | booking_reminder       | payment_reminder        | booking_cancelled      |
|-----|------------------------|-------------------------|------------------------|
| 1   | recipient's first name | client's first name     | recipient's first name |
| 2   | booking reference      | booking reference       | booking reference      |
| 3   | performer (stage name) | performer (stage name)  | performer (stage name) |
| 4   | event date and time    | event date and time     | event date and time    |
| 5   | venue                  | venue                   | venue                  |
| 6   | time until the event   | balance due (`$450.00`) | -                      |
| 7   | -                      | time until the event    | -                      |
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from jinja2 import Environment, Template

from scheduler.records import BookingFacts
from scheduler.vocabulary import Channel, MessageKind, Role

# Caps on free-text fields: real names and addresses fit; longer ones are abuse or bad data.
# Chosen so the longest WhatsApp text, every field at its cap in emoji, stays under 1,600.
NAME_MAX_CHARS = 60
VENUE_MAX_CHARS = 150  # a street address with unit, suburb, postcode and a landmark
REFERENCE_MAX_CHARS = 64  # platform references are short codes
WHATSAPP_MAX_UNITS = 1600  # Twilio's body limit, counted here in UTF-16 units, the stricter count
_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"

# English names by hand: strftime's %A, %B and %p follow the host's locale.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# Context names behind the numbered content variables (see the table above).
_COMMON_VARIABLES = ("recipient", "reference", "performer", "when", "venue")
_VARIABLES: dict[MessageKind, tuple[str, ...]] = {
    MessageKind.BOOKING_REMINDER: (*_COMMON_VARIABLES, "lead"),
    MessageKind.PAYMENT_REMINDER: (*_COMMON_VARIABLES, "balance", "lead"),
    MessageKind.BOOKING_CANCELLED: _COMMON_VARIABLES,
}
# Names set in templates/_defaults.txt.
_FALLBACKS = ("performer", "venue", "recipient", "client", "event_type")


class ContentError(ValueError):
    """A message cannot be written for this booking. The text names what is missing, never data."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One message's content; `content_variables` is filled for WhatsApp only."""

    text: str
    subject: str | None = None
    html: str | None = None
    content_variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InAppNotice:
    """A row's worth of the platform's `notifications` table: a short title and one sentence."""

    title: str
    message: str


def format_when(moment: datetime, tz: ZoneInfo) -> str:
    """`Saturday 5 December 2026, 7:00 pm` in `tz`, the same on every host whatever its locale."""
    if moment.utcoffset() is None:
        raise ContentError("event_date has no time zone")
    local = moment.astimezone(tz)
    hour = local.hour % 12 or 12
    half = "am" if local.hour < 12 else "pm"
    day, month = _DAYS[local.weekday()], _MONTHS[local.month - 1]
    return f"{day} {local.day} {month} {local.year}, {hour}:{local.minute:02d} {half}"


def format_aud(amount: Decimal) -> str:
    """`$1,250.00`, `-$5.00`; rounded half up to the cent, so `-0.001` is `$0.00`."""
    if not amount.is_finite():
        raise ContentError("amount is not a finite number")
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def format_lead(event_date: datetime, now: datetime) -> str:
    """How long until the event, rounded to the nearest unit a reader cares about.

    Under an hour: minutes (at least 1), `in 45 minutes`. Up to 24 hours: the nearest hour,
    `in 23 hours` (so 23 h 40 min reads `in 24 hours`, 90 min reads `in 2 hours`). Beyond: days
    and the nearest hour, `in 2 days`, `in 2 days and 3 hours`. Halves round up.
    """
    minutes = (event_date - now + timedelta(seconds=30)) // timedelta(minutes=1)
    if minutes < 60:
        return f"in {_count(max(minutes, 1), 'minute')}"
    hours = (minutes + 30) // 60
    if hours <= 24:
        return f"in {_count(hours, 'hour')}"
    days, hours = divmod(hours, 24)
    if hours == 0:
        return f"in {_count(days, 'day')}"
    return f"in {_count(days, 'day')} and {_count(hours, 'hour')}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _clean(value: str | None, limit: int) -> str | None:
    """One line without control characters, at most `limit` characters; None when empty.

    Newlines and tabs would break subjects and approved-template variables (WhatsApp refuses
    them); format characters (right-to-left marks, emoji joiners) are kept.
    """
    if value is None:
        return None
    text = " ".join(value.split())
    if not text.isprintable():  # the rare text with a control or format character: look closer
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    if not text:
        return None
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + _ELLIPSIS
    return text


def _hours(duration: Decimal | None) -> str | None:
    """`Decimal("2.00")` -> `2`, `Decimal("1.50")` -> `1.5`; None for a missing or silly value."""
    if duration is None or not duration.is_finite() or duration <= 0:
        return None
    return format(duration.normalize(), "f")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Renderer:
    """Writes every kind of message from the templates, with dates in one time zone."""

    def __init__(self, timezone: ZoneInfo) -> None:
        self._tz = timezone

    # The templates load on first use: a run with nothing to send never imports Jinja.
    @cached_property
    def _env(self) -> Environment:
        from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

        return Environment(
            loader=PackageLoader("scheduler.notify", "templates"),
            autoescape=select_autoescape(["html"]),  # plain text must reach people unescaped
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # The templates ship with the package and never change under a running process: no
            # stat() of the template files on every render (half of a render's time otherwise).
            auto_reload=False,
        )

    @cached_property
    def _defaults(self) -> dict[str, str]:
        # Fallback wording for missing data is wording too, so it lives with the templates.
        module = self._env.get_template("_defaults.txt").module
        return {name: str(getattr(module, name)) for name in _FALLBACKS}

    def format_when(self, moment: datetime) -> str:
        """The event's date and time in this renderer's time zone."""
        return format_when(moment, self._tz)

    def for_recipient(self, kind: MessageKind, role: Role, facts: BookingFacts, now: datetime) -> Letters:
        """What `kind` says to one recipient, on any channel, from values cleaned once."""
        return Letters(self, kind, lambda: self._context(kind, role, facts, now))

    def render(
        self, kind: MessageKind, channel: Channel, role: Role, facts: BookingFacts, now: datetime
    ) -> RenderedMessage:
        """One recipient's message; ContentError when the booking lacks what it needs."""
        return self.for_recipient(kind, role, facts, now).message(channel)

    def render_in_app(self, kind: MessageKind, role: Role, facts: BookingFacts, now: datetime) -> InAppNotice:
        """The title and one-sentence message of the platform's in-app notification."""
        return self.for_recipient(kind, role, facts, now).in_app()

    def render_part(self, kind: MessageKind, part: str, context: dict[str, Any]) -> str:
        """One template of `kind` (`email.html`, `in_app.txt`, ...) filled with `context`."""
        return self._template(f"{kind.value}.{part}").render(context).strip()

    @functools.cache  # noqa: B019 - one renderer per process, a few dozen templates
    def _template(self, name: str) -> Template:
        return self._env.get_template(name)

    def _context(self, kind: MessageKind, role: Role, facts: BookingFacts, now: datetime) -> dict[str, Any]:
        """Cleaned, formatted values with fallbacks applied; the same for every channel."""
        reference = _clean(facts.reference, REFERENCE_MAX_CHARS)
        if reference is None:
            raise ContentError("booking has no reference")
        if facts.event_date is None:
            raise ContentError(f"booking {reference} has no event_date")
        if kind is MessageKind.PAYMENT_REMINDER and role is not Role.CLIENT:
            raise ContentError("payment reminders go to the client only")

        defaults = self._defaults
        performer_first = _clean(facts.performer_first_name, NAME_MAX_CHARS)
        client_first = _clean(facts.client_first_name, NAME_MAX_CHARS)
        performer = _clean(facts.performer_stage_name, NAME_MAX_CHARS) or performer_first or defaults["performer"]
        recipient = (client_first or defaults["recipient"]) if role is Role.CLIENT else (performer_first or performer)
        event_type = _clean(facts.event_type, NAME_MAX_CHARS)
        context: dict[str, Any] = {
            "role": role.value,
            "reference": reference,
            "performer": performer,
            "recipient": recipient,
            "client": client_first or defaults["client"],
            "event_type": event_type.replace("_", " ") if event_type else defaults["event_type"],
            "venue": _clean(facts.venue, VENUE_MAX_CHARS) or defaults["venue"],
            "when": self.format_when(facts.event_date),
            "duration": _hours(facts.duration_hours),
        }
        if kind is MessageKind.BOOKING_CANCELLED:
            return context

        if facts.event_date <= now:
            raise ContentError(f"booking {reference} has already started")
        context["lead"] = format_lead(facts.event_date, now)
        if kind is MessageKind.PAYMENT_REMINDER:
            if facts.total_amount is None or facts.deposit_amount is None:
                raise ContentError(f"booking {reference} lacks total_amount or deposit_amount")
            if not (facts.total_amount.is_finite() and facts.deposit_amount.is_finite()):
                # NaN passes the due query (PostgreSQL sorts it above every number), and comparing
                # it below would raise InvalidOperation: the whole batch would fail, not this booking.
                raise ContentError(f"booking {reference}: total_amount or deposit_amount is not a finite number")
            balance = facts.total_amount - facts.deposit_amount
            if balance <= 0:
                raise ContentError(f"booking {reference} has no balance due")
            context["total"] = format_aud(facts.total_amount)
            context["deposit"] = format_aud(facts.deposit_amount)
            context["balance"] = format_aud(balance)
        return context


class Letters:
    """One recipient's messages of one kind: the booking's values are cleaned and formatted once,
    on first use (a recipient owed nothing asks nothing of the booking), for every channel."""

    def __init__(self, renderer: Renderer, kind: MessageKind, context: Callable[[], dict[str, Any]]) -> None:
        self._renderer = renderer
        self._kind = kind
        self._make_context = context

    @cached_property
    def _context(self) -> dict[str, Any]:
        return self._make_context()

    def message(self, channel: Channel) -> RenderedMessage:
        """The message on `channel`; ContentError when the booking lacks what it needs."""
        kind, context, render = self._kind, self._context, self._renderer.render_part
        if channel is not Channel.EMAIL:  # an SMS is a WhatsApp message's fallback: the same text
            text = render(kind, "whatsapp.txt", context)
            if len(text.encode("utf-16-le")) // 2 >= WHATSAPP_MAX_UNITS:
                raise ContentError("WhatsApp text too long")
            variables = {str(i): context[name] for i, name in enumerate(_VARIABLES[kind], 1)}
            return RenderedMessage(text=text, content_variables=variables)
        subject = _one_line(render(kind, "subject.txt", context))
        return RenderedMessage(
            text=render(kind, "email.txt", context),
            subject=subject,
            html=render(kind, "email.html", {**context, "subject": subject}),
        )

    def in_app(self) -> InAppNotice:
        """The title and one-sentence message of the platform's in-app notification."""
        kind, context, render = self._kind, self._context, self._renderer.render_part
        return InAppNotice(
            title=_one_line(render(kind, "in_app_title.txt", context)),
            message=_one_line(render(kind, "in_app.txt", context)),
        )
