"""Secrets and personal data. Every scenario of this suite runs with distinctive secrets and
contact details and hands its output to the scanner (support.EXPOSURE). These tests add the
runs most likely to leak: DEBUG logging (SQL with its parameters, HTTP clients), providers
refusing a recipient and quoting it back, rejected credentials, --check (whose Twilio account
answer carries the auth token), and database errors around a URL with a password.

Phones may appear only masked (`+61 4** *** 678`), emails only as `a***@example.com`.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import build
from scheduler.vocabulary import JobName, Trigger
from tests.fakes.providers import FakeResend, FakeTwilio, Reply
from tests.faults.support import (
    CRON_SECRET,
    DATABASE_PASSWORD,
    EMAIL_MARKER,
    EXPOSURE,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    Exposure,
    assert_clean_exit,
    cli_env,
    faults_settings,
    product_logging,
    record,
    run_cli,
    seed_bookings,
    stand_in_providers,
    stored_errors,
    with_password,
)

JOBS = (JobName.SEND_BOOKING_REMINDERS, JobName.CLEANUP_STALE_BOOKINGS, JobName.DELIVER_PENDING_MESSAGES)


def refusals(twilio: FakeTwilio, resend: FakeResend, to_phone: str, to_email: str) -> None:
    """Both providers refuse one recipient, quoting the address back as the real APIs do."""
    twilio.script(Reply.twilio_error(400, 21211, f"Invalid 'To' Phone Number: whatsapp:{to_phone}"))
    resend.refuse.add(to_email)  # by address: alone, or within a batch narrowed down to it


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_logs_at_every_level_carry_no_secret_or_contact(
    level: str, database_url: str, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    seeded = await seed_bookings(engine, 6, now=now)
    stale = await seed_bookings(engine, 2, now=now, stale=True)
    first = seeded[0]
    assert first.client is not None and first.client.phone and first.client.email
    async with stand_in_providers() as (twilio, resend):
        refusals(twilio, resend, first.client.phone, first.client.email)
        settings = faults_settings(database_url, twilio, resend, whatsapp_max_per_second=100, email_max_per_second=100)
        with product_logging(settings, level=level) as logs:
            app = build(settings)
            await app.prepare_database()
            try:
                results = [await app.runner.run(job, trigger=Trigger.MANUAL) for job in JOBS]
            finally:
                await app.aclose()
    errors = [error for result in results for error in result.errors]
    assert sorted(error.split(": ")[1].split(" ")[0] for error in errors) == ["email", "whatsapp"], errors
    output = logs.getvalue()
    assert "job_finished" in output, "the logs were not captured"
    if level == "DEBUG":  # SQL is logged with its parameters: the contact details went through, masked
        assert "INSERT INTO flavor_scheduler.deliveries" in output and "+61 4** ***" in output
    EXPOSURE.check(f"logs at {level}", output)
    EXPOSURE.check(f"errors at {level}", "\n".join(errors))
    EXPOSURE.check(f"stored errors at {level}", await stored_errors(engine))
    # The masked forms are what an operator gets instead.
    assert "+61 4** ***" in "\n".join(errors) and "a***@example.com" in "\n".join(errors), errors
    record(f"8 secrets: in-process logs at {level}", characters_scanned=len(output), bookings=len(seeded) + len(stale))


async def test_command_line_at_debug_with_refusals_and_rejected_credentials(
    database_url: str, engine: AsyncEngine, workdir: Path
) -> None:
    now = datetime.now(UTC)
    seeded = await seed_bookings(engine, 4, now=now)
    first = seeded[0]
    assert first.client is not None and first.client.phone and first.client.email
    outputs = []
    async with stand_in_providers() as (twilio, resend):
        refusals(twilio, resend, first.client.phone, first.client.email)
        env = cli_env(database_url, twilio, resend, LOG_LEVEL="DEBUG")
        outputs.append(await run_cli("--run-once", "all", env=env, cwd=workdir))
        outputs.append(await run_cli("--check", env=env, cwd=workdir))
        # Credentials the providers reject: the distinctive values are sent and refused.
        twilio.auth_token, resend.api_key = "another-token", "re_another_key"
        await seed_bookings(engine, 2, now=now)
        outputs.append(await run_cli("--run-once", "send_booking_reminders", env=env, cwd=workdir))
        outputs.append(await run_cli("--check", env=env, cwd=workdir))
    assert_clean_exit(outputs[0], code=1)
    assert_clean_exit(outputs[1], code=0)
    assert_clean_exit(outputs[2], code=1)
    assert_clean_exit(outputs[3], code=1)
    assert "credentials" in outputs[2].stdout and "API key" in outputs[2].stdout
    assert TWILIO_ACCOUNT_SID not in outputs[1].stdout  # masked, though not a secret
    record(
        "8 secrets: CLI at DEBUG",
        runs=len(outputs),
        characters_scanned=sum(len(done.stdout) + len(done.stderr) for done in outputs),
    )


async def test_database_errors_never_show_the_password(database_url: str, workdir: Path) -> None:
    unreachable = f"postgresql://app:{DATABASE_PASSWORD}@127.0.0.1:1/nowhere"
    wrong_database = make_url(with_password(database_url)).set(database="fs_no_such_database")
    bad_port = f"postgresql://app:{DATABASE_PASSWORD}@db.example.com:port/app"
    runs = []
    for url in (unreachable, wrong_database.render_as_string(hide_password=False), bad_port):
        env = cli_env(database_url, DATABASE_URL=url)
        runs.append(await run_cli("--run-once", "cleanup_expired_otps", env=env, cwd=workdir))
        runs.append(await run_cli("--check", env=env, cwd=workdir))
    for done in runs:
        assert done.code in (1, 2), done.stderr
        assert "Traceback" not in done.stderr
    record("8 secrets: database errors", runs=len(runs))


def test_the_scanner_finds_what_it_looks_for() -> None:
    """The scanner itself: raw values are found in any common spelling, masked ones are not."""
    scanner = Exposure()
    scanner.add_phones(["+61412999001"])
    assert scanner.find("to whatsapp:+61412999001") == ["phone number ending 001"]
    assert scanner.find("call 0412 999 001 now") == ["phone number ending 001"]
    assert scanner.find("call (04) 1299-9001") == ["phone number ending 001"]
    assert scanner.find("to +61 4** *** 001 and 041****001") == []
    assert scanner.find(f"to ava.{EMAIL_MARKER}000123@example.com") != []
    assert scanner.find("to a***@example.com") == []
    assert scanner.find(f"Bearer {CRON_SECRET}") == ["secret CRON_SECRET"]
    assert scanner.find(f"postgresql://app:{quote(DATABASE_PASSWORD, safe='')}@db/app") == ["secret database password"]
    basic = base64.b64encode(f"{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}".encode()).decode()
    assert scanner.find(f"Authorization: Basic {basic}") == ["secret TWILIO_AUTH_TOKEN (as HTTP basic credentials)"]
