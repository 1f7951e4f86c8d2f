"""Bad data in the platform's tables: NULL, empty and invalid phones and emails, missing client
and performer rows, NULL event dates, zero, negative and non-numeric balances, 10,000-character
names, HTML, emoji, control characters and right-to-left text. Each bad row fails alone with an
error naming its booking reference (or, where the data only means "nothing owed", quietly gets
nothing); the rest are processed; nothing crashes.

In this process, through the real SDKs to the stand-in providers, and once through the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import build
from scheduler.db.tables import bookings, clients, performers
from scheduler.jobs.result import JobResult
from scheduler.notify.content import NAME_MAX_CHARS, VENUE_MAX_CHARS
from scheduler.vocabulary import JobName, Trigger
from tests.fakes.providers import FakeResend, FakeTwilio
from tests.faults.support import (
    EMAIL_MARKER,
    EXPOSURE,
    assert_clean_exit,
    booking_row,
    cli_env,
    faults_settings,
    log_events,
    new_party,
    new_reference,
    product_logging,
    record,
    run_cli,
    stand_in_providers,
    stored_errors,
)

LONG = "Zanzibar" * 1250  # 10,000 characters
HTML = "<script>alert('x')</script><b>Bold & Co</b>"
EMOJI_RTL = "\U0001f389 \U0001f483\U0001f3fd \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eevil\u202c"
CONTROL = "Ava\n\tthe\x07Great\r\n"

REMIND, PAY, CANCEL = "send_booking_reminders", "send_payment_reminders", "cleanup_stale_bookings"


@dataclass
class Case:
    """One booking with one kind of bad data, and the errors each job must report for it."""

    label: str
    reference: str
    booking_id: UUID
    errors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job -> fragments of its error


@dataclass
class Data:
    cases: list[Case]
    good: list[str]  # references of the bookings without anything wrong
    contacts: list[str]  # every phone and email written, for the leak scan


async def insert_case(
    engine: AsyncEngine,
    data: Data,
    label: str,
    *,
    now: datetime,
    client: dict[str, Any] | None = None,
    performer: dict[str, Any] | None = None,
    missing: Sequence[str] = (),
    errors: dict[str, tuple[str, ...]] | None = None,
    reference: str | None = "",
    **booking: Any,
) -> Case:
    """A booking due for both reminders (client and performer with phones and emails) unless
    `booking` says otherwise; `client`/`performer` override their rows, `missing` leaves them out."""
    rows: dict[str, dict[str, Any]] = {}
    for kind, overrides in (("client", client), ("performer", performer)):
        _, values = new_party(kind)
        row = {"id": uuid4(), "user_id": uuid4(), "first_name": "Ava", "last_name": "Citizen", **values}
        if kind == "performer":
            row["stage_name"] = "Velvet Storm"
        row.update(overrides or {})
        data.contacts += [str(row.get("phone") or ""), str(row.get("email") or "")]
        rows[kind] = row
    booking_id = uuid4()
    if reference == "":
        reference = new_reference()
    values = booking_row(booking_id, reference, rows["client"]["id"], rows["performer"]["id"], now=now)
    values.update(booking)
    async with engine.begin() as conn:
        if "client" not in missing:
            await conn.execute(clients.insert().values(**rows["client"]))
        if "performer" not in missing:
            await conn.execute(performers.insert().values(**rows["performer"]))
        await conn.execute(bookings.insert().values(**values))
    case = Case(label, reference or str(booking_id), booking_id, errors or {})
    data.cases.append(case)
    return case


async def seed_bad_data(engine: AsyncEngine, now: datetime) -> Data:
    data = Data([], [], [])
    stale = {"status": "pending", "payment_status": "pending", "created_at": now - timedelta(days=2)}
    bad_phone = ("whatsapp to client", "invalid phone number")
    bad_email = ("email to client", "invalid email address")
    both = {REMIND: bad_phone, PAY: bad_phone}

    async def case(label: str, **kwargs: Any) -> Case:
        return await insert_case(engine, data, label, now=now, **kwargs)

    for n in range(5):
        good = await case(f"good {n}")
        data.good.append(good.reference)
    # Phones: missing ones are not an error (no WhatsApp owed); invalid ones are, per message.
    await case("phone NULL", client={"phone": None})
    await case("phone empty", client={"phone": ""})
    await case("phone blank", client={"phone": "   "})
    await case("phone too short", client={"phone": "12345"}, errors=both)
    await case("phone letters", client={"phone": "call me maybe"}, errors=both)
    await case("phone half a mobile", client={"phone": "+61 412 3"}, errors=both)
    await case(
        "performer phone invalid",
        performer={"phone": "+999 123 4567"},
        errors={REMIND: ("whatsapp to performer", "invalid phone number")},
    )
    # Emails, likewise.
    await case("email NULL", client={"email": None})
    await case("email empty", client={"email": ""})
    both_email = {REMIND: bad_email, PAY: bad_email}
    await case("email without @", client={"email": f"ava.{EMAIL_MARKER}900001.example.com"}, errors=both_email)
    await case("email double @", client={"email": f"ava.{EMAIL_MARKER}900002@@example.com"}, errors=both_email)
    await case("email no domain dot", client={"email": f"ava.{EMAIL_MARKER}900003@localhost"}, errors=both_email)
    await case(
        "performer email with spaces",
        performer={"email": f"velvet {EMAIL_MARKER}900004@example.com"},
        errors={REMIND: ("email to performer", "invalid email address")},
    )
    # Rows that are not there.
    missing_client = ("client record is missing",)
    await case("client row missing", missing=["client"], errors={REMIND: missing_client, PAY: missing_client})
    await case("client_id NULL", client_id=None, errors={REMIND: missing_client, PAY: missing_client})
    await case("performer row missing", missing=["performer"], errors={REMIND: ("performer record is missing",)})
    # Dates and money: not due means nothing owed and nothing wrong; impossible values are errors.
    await case("event_date NULL", event_date=None)
    await case("balance zero", deposit_amount=Decimal("1250.00"))
    await case("balance negative", deposit_amount=Decimal("2000.00"))
    await case("total NULL", total_amount=None)
    await case("deposit NULL", deposit_amount=None, errors={PAY: ("lacks total_amount or deposit_amount",)})
    await case("total NaN", total_amount=Decimal("NaN"), errors={PAY: ("not a finite number",)})
    await case("duration negative", duration_hours=Decimal(-3))
    # Text that must pass through safely.
    for label, value in (("10,000 characters", LONG), ("HTML", HTML), ("emoji and right-to-left", EMOJI_RTL)):
        await case(
            f"{label} in names and venue",
            client={"first_name": value},
            performer={"stage_name": value},
            venue_address=value,
            event_type=value,
        )
    await case("control characters", client={"first_name": CONTROL}, venue_address=CONTROL)
    await case("NULL reference", reference=None)
    await case("10,000-character reference", reference="FX-" + "9" * 9997)
    # Stale bookings for the cleanup: one without an event date cannot be written about.
    await case("stale", **stale)
    await case(
        "stale, event_date NULL",
        event_date=None,
        errors={CANCEL: ("cancellation notice not written", "has no event_date")},
        **stale,
    )
    await case("stale, client row missing", missing=["client"], errors={CANCEL: missing_client}, **stale)
    # A date the daemon cannot represent in TIMEZONE: the booking is still cancelled, alone.
    await case(
        "stale, event_date in the year 9999",
        event_date=datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
        errors={CANCEL: ("cancellation notice not written", "out of range")},
        **stale,
    )
    EXPOSURE.add_phones(data.contacts)
    return data


def check_errors(job: str, result: JobResult, data: Data) -> dict[str, str]:
    """Every error names exactly one bad booking; every bad booking has its errors; no other."""
    by_reference: dict[str, str] = {}
    references = sorted((case.reference for case in data.cases), key=len, reverse=True)
    for error in result.errors:
        assert "\n" not in error, error
        named = [reference for reference in references if f"booking {reference}" in error]
        assert named, f"{job}: an error names no booking: {error[:200]}"
        by_reference.setdefault(named[0], "")
        by_reference[named[0]] += error + " | "
    expected = {case.reference: case.errors[job] for case in data.cases if job in case.errors}
    assert set(by_reference) == set(expected), (
        f"{job}: errors for {sorted(set(by_reference) - set(expected))}, "
        f"none for {sorted(set(expected) - set(by_reference))}"
    )
    for reference, fragments in expected.items():
        for fragment in fragments:
            assert fragment in by_reference[reference], f"{job}, {reference}: {fragment!r} missing"
    return by_reference


async def deliveries(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT booking_reference, kind, channel, recipient_role, status, provider_message_id "
                "FROM flavor_scheduler.deliveries"
            )
        )
        return list(result)


def check_providers(twilio: FakeTwilio, resend: FakeResend, sent: list[Any]) -> None:
    """Every delivery recorded sent was accepted once; nothing was accepted that is not recorded."""
    accepted = [message.sid for message in twilio.accepted] + [email.id for email in resend.accepted]
    assert sorted(accepted) == sorted(row.provider_message_id for row in sent)


async def test_each_bad_row_fails_alone(database_url: str, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    data = await seed_bad_data(engine, now)
    by_label = {case.label: case for case in data.cases}
    async with stand_in_providers() as (twilio, resend):
        settings = faults_settings(database_url, twilio, resend, whatsapp_max_per_second=500, email_max_per_second=500)
        app = build(settings)
        await app.prepare_database()
        try:
            with product_logging(settings) as logs:
                results = {
                    job: await app.runner.run(JobName(job), trigger=Trigger.MANUAL) for job in (REMIND, PAY, CANCEL)
                }
        finally:
            await app.aclose()
        events = log_events(logs)
        EXPOSURE.check("bad data: logs", logs.getvalue())
        for job, result in results.items():
            EXPOSURE.check(f"bad data: {job} errors", "\n".join(result.errors))
            check_errors(job, result, data)
        EXPOSURE.check("bad data: stored errors", await stored_errors(engine))
        assert not [event for event in events if event["event"] == "job_crashed"]

        rows = await deliveries(engine)
        sent = [row for row in rows if row.status == "sent"]
        check_providers(twilio, resend, sent)
        failed = {(row.booking_reference, row.channel, row.recipient_role) for row in rows if row.status == "failed"}
        assert all(row.status in ("sent", "failed") for row in rows), {row.status for row in rows}
        # Invalid addresses are recorded failed (never sent, never retried); everything else was sent.
        assert {reference for reference, _, _ in failed} == {
            by_label[label].reference
            for label in (
                "phone too short", "phone letters", "phone half a mobile", "performer phone invalid",
                "email without @", "email double @", "email no domain dot", "performer email with spaces",
            )
        }  # fmt: skip
        kinds = {(row.booking_reference, row.kind, row.channel, row.recipient_role) for row in sent}
        for reference in data.good:
            assert {(k, c, r) for ref, k, c, r in kinds if ref == reference} == {
                (kind, channel, role)
                for kind, roles in (("booking_reminder", ("client", "performer")), ("payment_reminder", ("client",)))
                for channel in ("whatsapp", "email")
                for role in roles
            }
        quiet = ("phone NULL", "phone empty", "phone blank", "email NULL", "email empty")
        for label in quiet:
            reference = by_label[label].reference
            assert len([1 for ref, k, _, _ in kinds if ref == reference and k == "booking_reminder"]) == 3, label
        for label in ("event_date NULL", "balance zero", "balance negative", "total NULL"):
            assert not [1 for ref, k, _, _ in kinds if ref == by_label[label].reference and k == "payment_reminder"]
        assert not [1 for ref, _, _, _ in kinds if ref == by_label["event_date NULL"].reference]

        texts = [message.body for message in twilio.accepted]
        assert all(len(body) < 1600 for body in texts)
        longest_field = max(NAME_MAX_CHARS, VENUE_MAX_CHARS)
        assert not [body for body in texts if LONG[:longest_field] in body], "a 10,000-character field went out whole"
        for email in resend.accepted:
            html = str(email.payload.get("html", ""))
            assert "<script>" not in html and "<b>Bold" not in html
        assert any("&lt;script&gt;" in str(email.payload.get("html")) for email in resend.accepted)
        assert any("\u05e9\u05dc\u05d5\u05dd" in body and "\U0001f483\U0001f3fd" in body for body in texts)
        assert not [body for body in texts if "\x07" in body]
        null_reference = str(by_label["NULL reference"].booking_id)
        assert any(null_reference in body for body in texts)
        stale_labels = ("stale", "stale, event_date NULL", "stale, event_date in the year 9999")
        stale_ids = [by_label[label].booking_id for label in stale_labels]
        assert await booking_states(engine, stale_ids) == {"cancelled"}

    record(
        "5 bad data",
        bad_bookings=len(data.cases) - len(data.good),
        good_bookings=len(data.good),
        errors={job: len(result.errors) for job, result in results.items()},
        messages_sent=len(sent),
        messages_failed_for_bad_addresses=len(failed),
        crashes=0,
    )


async def booking_states(engine: AsyncEngine, ids: list[UUID]) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.scalars(text("SELECT status FROM bookings WHERE id = ANY(:ids)"), {"ids": ids}))


@pytest.mark.slow
async def test_bad_rows_through_the_command_line(database_url: str, engine: AsyncEngine, workdir: Path) -> None:
    data = await seed_bad_data(engine, datetime.now(UTC))
    async with stand_in_providers() as (twilio, resend):
        env = cli_env(database_url, twilio, resend, WHATSAPP_MAX_PER_SECOND="500", EMAIL_MAX_PER_SECOND="500")
        done = await run_cli("--run-once", "all", env=env, cwd=workdir)
    assert_clean_exit(done, code=1)
    body = done.json()
    summary = body["summary"]
    named = {
        reference
        for entry in summary.values()
        for error in entry["errors"]
        for reference in re.findall(r"booking (\S+?):", error)
    }
    expected = {case.reference for case in data.cases if case.errors}
    assert named == expected
    assert summary["bookingReminders"]["sent"] >= len(data.good)
    assert summary["staleBookings"]["cancelled"] == 4
    assert '"job_crashed"' not in done.stderr
    record("5 bad data (CLI)", exit_code=done.code, bookings_named_in_errors=len(named))
