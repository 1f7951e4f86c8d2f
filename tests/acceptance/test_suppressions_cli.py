"""`flavor-scheduler suppressions [--json]` and `suppressions lift ADDRESS`, run as an operator would:
masked addresses only, exit 1 for an address that is not suppressed or a database out of reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db import suppressions as suppressions_db
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings
from scheduler.vocabulary import AddressKind, Channel, JobName, MessageState, SuppressionReason, Trigger
from tests.acceptance.cli import clean_env, run_cli
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, fetch
from tests.fakes.providers import unused_local_url


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=to_libpq(database_url))


async def _suppress(engine: AsyncEngine) -> None:
    entries = [
        suppressions_db.NewSuppression(
            "Ava@Example.com", AddressKind.EMAIL, SuppressionReason.BOUNCED, "resend_webhook", "Permanent", "re-1"
        ),
        suppressions_db.NewSuppression("0412 345 678", AddressKind.PHONE, SuppressionReason.OPTED_OUT, "twilio_send"),
    ]
    async with engine.begin() as conn:
        assert await suppressions_db.suppress(conn, entries, now=NOW) == 2
        assert await suppressions_db.suppress(conn, entries, now=NOW) == 0  # already there: kept as it was


async def test_list_and_lift(env: dict[str, str], engine: AsyncEngine) -> None:
    empty = run_cli("suppressions", env=env)
    assert (empty.code, empty.stdout.strip()) == (0, "No suppressed addresses.")
    await _suppress(engine)

    listed = run_cli("suppressions", "--json", env=env)
    assert listed.code == 0, listed.stderr
    found = {entry["address"]: entry for entry in listed.json()["suppressions"]}
    assert set(found) == {"a***@example.com", "+61 4** *** 678"}
    assert found["a***@example.com"]["reason"] == "bounced" and found["+61 4** *** 678"]["kind"] == "phone"
    table = run_cli("suppressions", env=env)
    assert table.code == 0 and "ava@" not in table.stdout.lower() and "345" not in table.stdout
    assert all(column in table.stdout for column in ("ADDRESS", "KIND", "REASON", "SOURCE", "DETAIL", "SINCE"))
    assert "a***@example.com" in table.stdout and "bounced" in table.stdout

    # Lifted by the address as anyone writes it: another case, the international form.
    lifted = run_cli("suppressions", "lift", "ava@example.COM", "--json", env=env)
    assert (lifted.code, lifted.json()) == (0, {"changed": ["a***@example.com"]})
    phone = run_cli("suppressions", "lift", "+61412345678", env=env)
    assert phone.code == 0 and phone.stdout.startswith("lifted: +61 4** *** 678 (was opted_out, twilio_send)")
    assert await fetch(engine, "SELECT * FROM flavor_scheduler.suppressions") == []

    again = run_cli("suppressions", "lift", "ava@example.com", env=env)
    assert again.code == 1 and "a***@example.com is not suppressed" in again.stderr
    assert "ava@example.com" not in again.stderr


def test_usage_and_database_errors(env: dict[str, str]) -> None:
    assert run_cli("suppressions", "lift", env=env).code == 2
    assert run_cli("suppressions", "unlift", "x", env=env).code == 2
    assert run_cli("suppressions", "lift", "not-a-number", env=env).code == 2
    port = unused_local_url().rsplit(":", 1)[1]
    down = run_cli(
        "suppressions", env=clean_env(DATABASE_URL=f"postgresql://u:hunter2@127.0.0.1:{port}/db?connect_timeout=2")
    )
    assert down.code == 1 and "hunter2" not in down.stderr


async def test_resend_force_overrides_the_suppression_for_one_message(
    env: dict[str, str], database_url: str, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)  # the console stamps "due now" with this machine's clock
    clock = FrozenClock(now)
    email = RecordingTransport(Channel.EMAIL)
    app = build(
        Settings(_env_file=None, database_url=to_libpq(database_url), quiet_hours="off"),
        clock=clock, transports={Channel.EMAIL: email},
    )  # fmt: skip
    await app.prepare_database()
    try:
        client = await add_client(engine, email="ava@example.com", phone=None)
        await add_booking(engine, client=client, event_date=now + timedelta(hours=5))
        async with engine.begin() as conn:
            await suppressions_db.suppress(
                conn,
                [suppressions_db.NewSuppression("ava@example.com", AddressKind.EMAIL, SuppressionReason.BOUNCED, "t")],
                now=now,
            )
        await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
        (skipped,) = await fetch(
            engine, "SELECT id, last_error FROM flavor_scheduler.deliveries WHERE address = 'ava@example.com'"
        )
        assert skipped.last_error == "suppressed"
        listed = run_cli("messages", "--status", "skipped", "--json", env=env)  # CONTRACT §2: listed there
        listed_skips = {m["id"]: (m["reason"], m["address"]) for m in listed.json()["messages"]}
        assert listed_skips[str(skipped.id)] == ("suppressed", "a***@example.com")

        plain = run_cli("resend", str(skipped.id), env=env)  # back to pending, and skipped again when due
        assert plain.code == 0 and "add --force to send this one anyway" in plain.stderr
        clock.advance(60)
        await app.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.MANUAL)
        assert [m.to for m in email.sent].count("ava@example.com") == 0

        forced = run_cli("resend", str(skipped.id), "--force", env=env)
        assert forced.code == 0, forced.stderr
        clock.advance(60)
        result = await app.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.MANUAL)
        assert result.messages[MessageState.SENT] == 1
        assert [m.to for m in email.sent].count("ava@example.com") == 1
        assert len(await fetch(engine, "SELECT * FROM flavor_scheduler.suppressions")) == 1  # still suppressed
    finally:
        await app.aclose()
