"""The operator's console as a subprocess, on a real history with runs and messages in every
state: exit codes, the JSON shapes of CONTRACT §3, masked addresses, and resend / cancel /
pause / resume doing exactly what they say."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.pauses import paused_jobs
from scheduler.jobs.catalog import GROUPS
from scheduler.settings import Settings
from scheduler.vocabulary import JobName
from tests.acceptance.cli import Completed, clean_env, run_cli
from tests.acceptance.console_history import OWN, History, deliveries, make_history
from tests.database import to_libpq
from tests.factories import fetch, scalar
from tests.fakes.fixtures import EMAIL_FROM, RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
from tests.fakes.fixtures import TWILIO_WHATSAPP_NUMBER as SENDER
from tests.fakes.providers import FakeResend, FakeTwilio

RUN_KEYS = {"runId", "job", "trigger", "replica", "startedAt", "finishedAt", "outcome", "count", "errors"}
MESSAGE_KEYS = {
    "id", "bookingReference", "kind", "role", "channel", "address", "status", "reason", "attempts",
    "providerId", "providerStatus", "createdAt", "updatedAt",
}  # fmt: skip
JOB_KEYS = {"job", "schedule", "enabled", "paused", "running", "lastRun", "nextRun"}


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=to_libpq(database_url), COLUMNS="200")


@pytest.fixture
async def history(engine: AsyncEngine, settings: Settings) -> History:
    return await make_history(engine, settings)


def console(*args: str, env: dict[str, str], history: History | None = None) -> Completed:
    """The command; nothing it prints may hold a contact's full phone number or email address."""
    done = run_cli(*args, env=env)
    if history is not None:
        printed = done.stdout + done.stderr
        for secret in [*history.addresses, *history.phones]:
            assert secret not in printed, f"{secret!r} printed by {args}"
        assert "Traceback" not in done.stderr
    return done


async def console_async(*args: str, env: dict[str, str], history: History) -> Completed:
    """The same, while this test's event loop serves the stand-in providers."""
    return await asyncio.to_thread(console, *args, env=env, history=history)


def _by_status(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        found.setdefault(message["status"], []).append(message)
    return found


def test_status_shows_every_job_runs_in_progress_and_the_backlog(env: dict[str, str], history: History) -> None:
    done = console("status", "--json", env=env, history=history)
    assert done.code == 0, done.stderr
    body = done.json()
    assert {"jobs", "messages"} <= set(body)
    jobs = {job["job"]: job for job in body["jobs"]}
    assert list(jobs) == [job.value for job in JobName]
    for job in jobs.values():
        assert set(job) >= JOB_KEYS
        assert job["enabled"] is True and job["paused"] is False and job["nextRun"].endswith("Z")
    running = jobs["cleanup_expired_otps"]["running"]
    assert [(run["replica"], run["trigger"]) for run in running] == [("web-3:77:abcdef", "take_over")]
    assert 0 < running[0]["leaseLeftSeconds"] <= 40
    assert jobs["cleanup_old_audit_logs"]["lastRun"]["outcome"] == "error"
    assert jobs["cleanup_old_audit_logs"]["lastRun"]["errors"] == [
        "database unreachable: connection refused by 10.0.0.5:5432"
    ]
    reminders = jobs["send_booking_reminders"]["lastRun"]
    assert set(reminders) >= RUN_KEYS and reminders["trigger"] == "schedule" and reminders["outcome"] == "partial"
    assert jobs["cleanup_old_notifications"]["lastRun"] is None
    whatsapp, email = body["messages"]["whatsapp"], body["messages"]["email"]
    assert {status: whatsapp.get(status) for status in ("pending", "held", "sending", "failed", "void")} == {
        "pending": 1, "held": 1, "sending": 1, "failed": 1, "void": 1,
    }  # fmt: skip
    assert email["skipped"] == 2 and email["failed"] == 1 and email["sent"] >= 10 and whatsapp["sent"] >= 8

    table = console("status", env=env, history=history)
    assert table.code == 0, table.stderr
    for job in JobName:
        assert job.value in table.stdout
    assert "web-3:77:abcdef" in table.stdout and "lease" in table.stdout
    assert "connection refused by 10.0.0.5:5432" in table.stdout


def test_runs_newest_first_filtered(env: dict[str, str], history: History) -> None:
    done = console("runs", "--json", env=env, history=history)
    assert done.code == 0, done.stderr
    runs = done.json()["runs"]
    assert all(set(run) >= RUN_KEYS for run in runs)
    assert [run["startedAt"] for run in runs] == sorted((run["startedAt"] for run in runs), reverse=True)
    assert {"manual", "schedule", "http", "catch_up", "take_over"} <= {run["trigger"] for run in runs}
    reminders = next(run for run in runs if run["job"] == "send_booking_reminders" and run["trigger"] == "schedule")
    assert reminders["outcome"] == "partial" and reminders["count"] >= 1 and reminders["errors"]

    failed = console("runs", "--failed", "--json", env=env, history=history).json()["runs"]
    assert failed and {run["outcome"] for run in failed} <= {"partial", "error"}
    assert {"partial", "error"} == {run["outcome"] for run in failed}
    one_job = console("runs", "deliver_pending_messages", "--json", env=env, history=history).json()["runs"]
    assert [run["job"] for run in one_job] == ["deliver_pending_messages"]
    recent = console("runs", "--since", "1h", "--json", env=env, history=history).json()["runs"]
    assert "error" not in {run["outcome"] for run in recent}  # the errored run started 3 hours ago
    assert len(console("runs", "--limit", "2", "--json", env=env).json()["runs"]) == 2
    table = console("runs", "--failed", env=env, history=history)
    assert table.code == 0 and "cleanup_old_audit_logs" in table.stdout and "send_booking_reminders" in table.stdout

    for bad in (("runs", "--since", "last tuesday"), ("runs", "--limit", "0"), ("runs", "no_such_job")):
        refused = console(*bad, env=env)
        assert refused.code == 2, bad
        assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == ""


def test_messages_in_every_state_masked(env: dict[str, str], history: History) -> None:
    done = console("messages", "--limit", "200", "--json", env=env, history=history)
    assert done.code == 0, done.stderr
    messages = done.json()["messages"]
    assert all(set(message) >= MESSAGE_KEYS for message in messages)
    by_status = _by_status(messages)
    assert set(by_status) == {"pending", "held", "sending", "sent", "failed", "skipped", "void"}
    assert [m["createdAt"] for m in messages] == sorted((m["createdAt"] for m in messages), reverse=True)
    assert by_status["void"][0]["reason"] == "the booking is cancelled now"
    assert by_status["pending"][0]["reason"].startswith("HTTP 503") and by_status["pending"][0]["attempts"] >= 2
    assert all(m["reason"] == "email channel is off (no credentials)" for m in by_status["skipped"])
    assert any(m["providerStatus"] == "delivered" for m in by_status["sent"])
    assert all(m["providerId"] for m in by_status["sent"])
    for message in messages:
        if message["address"] is not None:
            assert "***" in message["address"]

    failed = console("messages", "--status", "failed", "--json", env=env, history=history).json()["messages"]
    assert {m["status"] for m in failed} == {"failed"} and {m["channel"] for m in failed} == {"whatsapp", "email"}
    invalid = next(m for m in failed if m["channel"] == "whatsapp")
    assert invalid["address"] is None and "invalid phone number" in invalid["reason"]
    emails = console("messages", "--channel", "email", "--json", env=env, history=history).json()["messages"]
    assert {m["channel"] for m in emails} == {"email"}
    table = console("messages", env=env, history=history)
    assert table.code == 0 and history.sending["booking_reference"] in table.stdout
    assert console("messages", "--status", "lost", env=env).code == 2


def test_a_booking_s_whole_trail(env: dict[str, str], history: History) -> None:
    reference = history.sent["booking_reference"]
    done = console("messages", "--booking", reference, "--json", env=env, history=history)
    assert done.code == 0, done.stderr
    body = done.json()
    assert {m["bookingReference"] for m in body["messages"]} == {reference}
    assert {(m["channel"], m["role"]) for m in body["messages"]} == {
        (channel, role) for channel in ("whatsapp", "email") for role in ("client", "performer")
    }
    assert body["booking"]["reference"] == reference and body["booking"]["status"] == "confirmed"
    assert [(r["kind"], r["eventDate"][:13]) for r in body["reminders"]] == [
        ("booking_reminder", history.sent["event_date"].isoformat()[:13])
    ]
    assert {(n["type"], n["role"]) for n in body["notices"]} == {
        ("booking_reminder", "client"), ("booking_reminder", "performer"),
    }  # fmt: skip
    notes = [row for row in body["audit"] if row["action"] == "reminder_note"]
    assert notes and "***@" in notes[0]["details"]["contact"]
    assert any(row["action"] == "reminder_sent" for row in body["audit"])

    table = console("messages", "--booking", reference, env=env, history=history)
    assert table.code == 0, table.stderr
    for heading in ("Reminders recorded", "Messages, oldest first", "In-app notices", "Audit rows"):
        assert heading in table.stdout
    unknown = console("messages", "--booking", "FE-NOPE-1", env=env)
    assert unknown.code == 1 and "FE-NOPE-1" in unknown.stderr


@pytest.fixture
def provider_env(env: dict[str, str], twilio_server: FakeTwilio, resend_server: FakeResend) -> dict[str, str]:
    return {
        **env,
        "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        "TWILIO_WHATSAPP_NUMBER": SENDER,
        "TWILIO_API_BASE_URL": twilio_server.url,
        "RESEND_API_KEY": RESEND_API_KEY,
        "RESEND_API_URL": resend_server.url,
        "EMAIL_FROM": EMAIL_FROM,
    }


async def test_resend_of_a_failed_and_a_skipped_message_delivers_each_exactly_once(
    provider_env: dict[str, str], history: History, engine: AsyncEngine, resend_server: FakeResend
) -> None:
    rows = await deliveries(engine)
    failed = history.delivery(rows, history.failed, "email")
    skipped = history.delivery(rows, history.skipped, "email", role="performer")
    assert (failed.status, skipped.status) == ("failed", "skipped")

    done = await console_async(
        "resend", str(failed.id)[:8], str(skipped.id), "--json", env=provider_env, history=history
    )
    assert done.code == 0, done.stderr
    assert sorted(done.json()["changed"]) == sorted([str(failed.id), str(skipped.id)])
    statuses = await fetch(
        engine, f"SELECT status, last_error FROM {OWN}.deliveries WHERE id IN (:a, :b)", a=failed.id, b=skipped.id
    )
    assert {row.status for row in statuses} == {"pending"}
    assert all(row.last_error.startswith("resent by operator; was ") for row in statuses)

    for _ in range(2):  # a second run finds nothing more to send
        delivered = await console_async("--run-once", "deliver_pending_messages", env=provider_env, history=history)
        assert delivered.code == 0, delivered.stderr
    sent_to = [email.to for email in resend_server.accepted]
    assert sorted(sent_to) == sorted([[failed.address], [skipped.address]])
    assert await scalar(engine, f"SELECT status FROM {OWN}.deliveries WHERE id = :id", id=failed.id) == "sent"


async def test_a_sent_message_is_sent_again_only_with_force_and_then_exactly_once(
    provider_env: dict[str, str], history: History, engine: AsyncEngine, twilio_server: FakeTwilio
) -> None:
    rows = await deliveries(engine)
    sent = history.delivery(rows, history.sent, "whatsapp")
    assert sent.status == "sent"

    refused = await console_async("resend", str(sent.id), "--json", env=provider_env, history=history)
    assert refused.code == 1
    assert "--force" in refused.stderr and refused.json() == {"changed": [], "copies": {}}

    forced = await console_async("resend", str(sent.id), "--force", "--json", env=provider_env, history=history)
    assert forced.code == 0, forced.stderr
    [copy] = forced.json()["changed"]
    assert copy != str(sent.id) and forced.json()["copies"] == {str(sent.id): copy}
    again = await console_async("resend", str(sent.id), "--force", "--json", env=provider_env, history=history)
    assert again.code == 0 and again.json()["changed"] == [] and copy in again.stderr  # already sent again

    for _ in range(2):
        delivered = await console_async("--run-once", "deliver_pending_messages", env=provider_env, history=history)
        assert delivered.code == 0, delivered.stderr
    assert [message.to for message in twilio_server.accepted] == [f"whatsapp:{sent.address}"]
    copies = await fetch(engine, f"SELECT status, dedupe_key FROM {OWN}.deliveries WHERE id = :id", id=copy)
    assert copies[0].status == "sent" and copies[0].dedupe_key == f"{sent.dedupe_key}:resent"
    assert await scalar(engine, f"SELECT status FROM {OWN}.deliveries WHERE id = :id", id=sent.id) == "sent"


async def test_cancel_makes_held_and_pending_void_and_nothing_is_sent(
    provider_env: dict[str, str], history: History, engine: AsyncEngine, twilio_server: FakeTwilio
) -> None:
    rows = await deliveries(engine)
    held = history.delivery(rows, history.held, "whatsapp")
    pending = history.delivery(rows, history.retrying, "whatsapp")
    sending = history.delivery(rows, history.sending, "whatsapp")
    sent = history.delivery(rows, history.sent, "email")

    done = await console_async("cancel", str(held.id), "--json", env=provider_env, history=history)
    assert done.code == 0 and done.json() == {"changed": [str(held.id)]}
    by_booking = await console_async(
        "cancel", "--booking", history.retrying["booking_reference"], "--json", env=provider_env, history=history
    )
    assert by_booking.code == 0 and by_booking.json() == {"changed": [str(pending.id)]}
    rows = await fetch(
        engine, f"SELECT status, last_error FROM {OWN}.deliveries WHERE id IN (:a, :b)", a=held.id, b=pending.id
    )
    assert [(row.status, row.last_error) for row in rows] == [("void", "cancelled by operator")] * 2

    in_flight = await console_async("cancel", str(sending.id), env=provider_env, history=history)
    assert in_flight.code == 1 and "being sent now" in in_flight.stderr
    settled = await console_async("cancel", str(sent.id), "--json", env=provider_env, history=history)
    assert settled.code == 0 and settled.json() == {"changed": []} and "already sent" in settled.stderr

    # Were they still owed, they would be due now: the delivery run sends neither.
    await fetch(
        engine,
        f"UPDATE {OWN}.deliveries SET next_attempt_at = now() - interval '1 minute' WHERE id IN (:a, :b) RETURNING id",
        a=held.id,
        b=pending.id,
    )
    delivered = await console_async("--run-once", "deliver_pending_messages", env=provider_env, history=history)
    assert delivered.code == 0, delivered.stderr
    assert twilio_server.accepted == []


def test_unknown_and_malformed_ids(env: dict[str, str], history: History) -> None:
    unknown = console("resend", "00000000-0000-4000-8000-000000000000", env=env, history=history)
    assert unknown.code == 1 and "no message with id" in unknown.stderr
    assert console("cancel", "0000000f", "--json", env=env).code == 1
    for usage in (("resend", "not-an-id"), ("resend",), ("cancel", "--booking"), ("resend", "1234567")):
        refused = console(*usage, env=env)
        assert refused.code == 2, usage
        assert "Traceback" not in refused.stderr and refused.stdout == ""
    both = console("cancel", "abcdef12", "--booking", "FE-1", env=env)
    assert both.code == 2


async def test_pause_and_resume_are_kept_in_the_database(
    env: dict[str, str], history: History, engine: AsyncEngine
) -> None:
    done = console("pause", "send_booking_reminders", "--reason", "venue data being fixed", "--json", env=env)
    assert done.code == 0 and done.json() == {"changed": ["send_booking_reminders"]}
    async with engine.connect() as conn:
        pauses = await paused_jobs(conn)  # what the daemon reads
    assert (
        list(pauses) == ["send_booking_reminders"]
        and pauses["send_booking_reminders"].reason == "venue data being fixed"
    )
    assert console("pause", "send_booking_reminders", "--json", env=env).json() == {"changed": []}

    status = console("status", "--json", env=env, history=history).json()
    job = next(job for job in status["jobs"] if job["job"] == "send_booking_reminders")
    assert job["paused"] is True and job["pausedReason"] == "venue data being fixed" and "@" in job["pausedBy"]
    table = console("status", env=env, history=history)
    assert "paused" in table.stdout and "venue data being fixed" in table.stdout
    listed = console("--list-jobs", env=env)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("send_booking_reminders"))
    assert line.rstrip().endswith("yes")  # paused

    group = console("pause", "cleanup", "--json", env=env)
    assert group.code == 0 and group.json()["changed"] == [job.value for job in GROUPS["cleanup"]]
    resumed = console("resume", "send_booking_reminders", "--json", env=env)
    assert resumed.code == 0 and resumed.json() == {"changed": ["send_booking_reminders"]}
    assert console("resume", "send_booking_reminders", "--json", env=env).json() == {"changed": []}
    assert console("pause", "send_everything", env=env).code == 2


def test_list_jobs_adds_the_last_run_and_works_without_the_database(env: dict[str, str], history: History) -> None:
    done = console("--list-jobs", env=env, history=history)
    assert done.code == 0, done.stderr
    header, *lines = done.stdout.strip().splitlines()
    assert "LAST RUN" in header and header.split()[-2:] == ["OUTCOME", "PAUSED"]
    audit = next(line for line in lines if line.startswith("cleanup_old_audit_logs"))
    assert " error " in audit
    notifications = next(line for line in lines if line.startswith("cleanup_old_notifications"))
    assert " never " in notifications

    down = console("--list-jobs", env=clean_env(DATABASE_URL="postgresql://app:pw@127.0.0.1:1/nowhere"))
    assert down.code == 0 and len(down.stdout.strip().splitlines()) == 1 + len(JobName)
    assert "LAST RUN" not in down.stdout and "last runs not shown" in down.stderr
    no_url = console("--list-jobs", env=clean_env())
    assert no_url.code == 0 and "LAST RUN" not in no_url.stdout and no_url.stderr == ""


def test_the_database_unreachable_or_not_configured() -> None:
    url = "postgresql://app:Sup3rS3cretPw@127.0.0.1:1/nowhere"
    for command in ("status", "runs", "messages", "pause"):
        args = (command, "send_booking_reminders") if command == "pause" else (command,)
        done = console(*args, "--json", env=clean_env(DATABASE_URL=url))
        assert done.code == 1, done.stderr
        assert "database unreachable" in done.stderr and "Sup3rS3cretPw" not in done.stderr + done.stdout
        assert done.stdout == ""
    missing = console("status", env=clean_env())
    assert missing.code == 2 and "DATABASE_URL" in missing.stderr


def test_demo_combines_with_the_console(tmp_path: Path) -> None:
    env = clean_env(COLUMNS="200")
    first = run_cli("--demo", "status", "--json", env=env, cwd=tmp_path)
    assert first.code == 0, first.stderr
    runs = {job["job"]: job["lastRun"] for job in first.json()["jobs"]}
    assert all(run is not None and run["outcome"] == "success" for run in runs.values())  # each job ran once
    trail = run_cli("--demo", "messages", "--booking", "FE-DEMO-03", "--json", env=env, cwd=tmp_path)
    assert trail.code == 0, trail.stderr
    body = trail.json()
    sent = {(m["kind"], m["channel"], m["role"]) for m in body["messages"] if m["status"] == "sent"}
    assert ("booking_reminder", "whatsapp", "client") in sent
    assert {r["kind"] for r in body["reminders"]} >= {"booking_reminder"}
    assert body["booking"]["reference"] == "FE-DEMO-03"
    again = run_cli("--demo", "status", "--json", env=env, cwd=tmp_path)
    assert [job["lastRun"]["runId"] for job in again.json()["jobs"]] == [run["runId"] for run in runs.values()]
