"""The CLI as a subprocess: every job and group, exit codes, JSON shapes, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.jobs.catalog import GROUPS, JOBS
from scheduler.vocabulary import JobName
from tests.acceptance.cli import clean_env, run_cli
from tests.database import to_libpq
from tests.factories import add_booking, add_notification, scalar

JOB_KEYS = {"job", "success", "errors", "dryRun", "startedAt", "finishedAt"}


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=to_libpq(database_url))


@pytest.mark.parametrize("job", list(JobName))
def test_every_job_runs_once_and_prints_its_json(job: JobName, env: dict[str, str]) -> None:
    done = run_cli("--run-once", job.value, env=env)
    assert done.code == 0, done.stderr
    body = done.json()
    assert JOB_KEYS | {JOBS[job].count_key} <= set(body)
    assert body["job"] == job.value
    assert body["success"] is True
    assert body["errors"] == []
    assert body["dryRun"] is False
    assert body["startedAt"].endswith("Z")
    assert "job_finished" in done.stderr  # logs go to stderr, never stdout


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_group_prints_the_summary(group: str, env: dict[str, str]) -> None:
    done = run_cli("--run-once", group, env=env)
    assert done.code == 0, done.stderr
    body = done.json()
    assert set(body) == {"success", "timestamp", "summary"}
    expected = {JOBS[job].summary_key for job in GROUPS[group]}
    assert set(body["summary"]) == expected
    for job in GROUPS[group]:
        entry = body["summary"][JOBS[job].summary_key]
        assert set(entry) >= {JOBS[job].summary_count, "errors"}


async def test_results_count_real_work(env: dict[str, str], engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    stale = await add_booking(engine, status="pending", payment_status="pending", created_at=now - timedelta(days=2))
    await add_notification(engine, is_read=True, created_at=now - timedelta(days=40))

    dry = run_cli("--run-once", "cleanup", "--dry-run", env=env)
    assert dry.code == 0, dry.stderr
    summary = dry.json()["summary"]
    assert summary["staleBookings"] == {"wouldCancel": 1, "bookings": [stale["booking_reference"]], "errors": []}
    assert summary["notifications"] == {"wouldDelete": 1, "errors": []}
    assert "cancelled" not in summary["staleBookings"] and dry.json()["dryRun"] is True
    assert await scalar(engine, "SELECT status FROM bookings WHERE id = :id", id=stale["id"]) == "pending"

    real = run_cli("--run-once", "cleanup", env=env)
    assert real.code == 0, real.stderr
    assert real.json()["summary"]["staleBookings"] == {"cancelled": 1, "errors": []}
    assert real.json()["summary"]["notifications"] == {"deleted": 1, "errors": []}
    assert await scalar(engine, "SELECT status FROM bookings WHERE id = :id", id=stale["id"]) == "cancelled"


async def test_reported_errors_exit_1_without_contact_details(env: dict[str, str], engine: AsyncEngine) -> None:
    from tests.factories import add_client

    client = await add_client(engine, phone="12345", email="someone.private@example.com")
    booking = await add_booking(engine, client=client, event_date=datetime.now(UTC) + timedelta(hours=5))
    done = run_cli("--run-once", "send_booking_reminders", env={**env, "RESEND_API_KEY": ""})
    assert done.code == 1
    body = done.json()
    assert body["success"] is False
    assert any(booking["booking_reference"] in error and "whatsapp" in error for error in body["errors"])
    assert "someone.private@example.com" not in done.stdout + done.stderr


def test_unknown_job_lists_valid_names(env: dict[str, str]) -> None:
    done = run_cli("--run-once", "cleanup_everything", env=env)
    assert done.code == 2
    assert "cleanup_everything" in done.stderr
    for name in ("cleanup_stale_bookings", "send_payment_reminders", "deliver_pending_messages", "reminders", "all"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCHEDULE_SEND_BOOKING_REMINDERS", "every hour"),
        ("TIMEZONE", "Australia/Atlantis"),
        ("STALE_BOOKING_HOURS", "-1"),
        ("DELETE_BATCH_SIZE", "lots"),
    ],
)
def test_bad_setting_exits_2_naming_it(env: dict[str, str], variable: str, value: str) -> None:
    done = run_cli("--run-once", "all", env={**env, variable: value})
    assert done.code == 2
    assert variable in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("SCHEDULE_SEND_BOOKING_REMINDER", "SCHEDULE_SEND_BOOKING_REMINDERS"),
        ("SCHEDULE_CLEANUP", "SCHEDULE_CLEANUP_"),
        ("TWILIO_AUTH_TOKN", "TWILIO_AUTH_TOKEN"),
    ],
)
def test_lookalike_variable_exits_2_naming_the_real_one(env: dict[str, str], variable: str, closest: str) -> None:
    done = run_cli("--run-once", "all", env={**env, variable: "*/30 * * * *"})
    assert done.code == 2
    assert variable in done.stderr and closest in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_no_database_url_explains_how_to_set_one() -> None:
    done = run_cli("--run-once", "all", env=clean_env())
    assert done.code == 2
    assert "DATABASE_URL" in done.stderr
    assert "--demo" in done.stderr


def test_unreachable_database_exits_1_without_password() -> None:
    url = "postgresql://app:Sup3rS3cretPw@127.0.0.1:1/nowhere"
    done = run_cli("--run-once", "cleanup_expired_otps", env=clean_env(DATABASE_URL=url))
    assert done.code == 1
    assert "database" in done.stderr.lower()
    assert "Sup3rS3cretPw" not in done.stderr + done.stdout
    # The result JSON all the same, for whatever reads stdout: a run that could not start.
    result = json.loads(done.stdout)
    assert result["job"] == "cleanup_expired_otps"
    assert result["outcome"] == "error" and result["success"] is False
    assert f"flavor-scheduler: {result['errors'][0]}" in done.stderr.splitlines()


async def test_a_missing_platform_table_is_a_result_that_names_it(engine: AsyncEngine, env: dict[str, str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE performers"))
    done = run_cli("--run-once", "cleanup_stale_bookings", env=env)
    assert done.code == 1
    result = json.loads(done.stdout)
    assert result["outcome"] == "error" and result["success"] is False
    (error,) = result["errors"]
    assert error.startswith("platform schema problem") and "performers" in error
    assert f"flavor-scheduler: {error}" in done.stderr.splitlines()


def test_a_group_that_cannot_reach_its_database_reports_every_job() -> None:
    done = run_cli("--run-once", "cleanup", env=clean_env(DATABASE_URL="postgresql://app@127.0.0.1:1/nowhere"))
    assert done.code == 1
    summary = json.loads(done.stdout)
    assert summary["success"] is False
    assert all(part["errors"] and "database unreachable" in part["errors"][0] for part in summary["summary"].values())


def test_version_is_the_installed_package_s(env: dict[str, str]) -> None:
    """The version is written once (scheduler/__init__.py) and read by setuptools from there."""
    from importlib.metadata import version

    done = run_cli("--version", env=env)
    assert done.code == 0
    assert done.stdout == f"flavor-scheduler {version('flavor-scheduler')}\n"


def test_dry_run_needs_run_once(env: dict[str, str]) -> None:
    done = run_cli("--dry-run", env=env)
    assert done.code == 2
    assert "--run-once" in done.stderr


def test_list_jobs(env: dict[str, str]) -> None:
    done = run_cli("--list-jobs", env={**env, "SCHEDULE_CLEANUP_EXPIRED_OTPS": "off", "TIMEZONE": "Australia/Sydney"})
    assert done.code == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + len(JobName)
    otps = next(line for line in lines if line.startswith("cleanup_expired_otps"))
    assert " off " in otps and " no " in otps
    reminders = next(line for line in lines if line.startswith("send_booking_reminders"))
    assert "0 * * * *" in reminders and "Australia/Sydney" in reminders and " yes " in reminders


def test_missing_required_table_is_named(env: dict[str, str], database_url: str) -> None:
    import asyncio

    from sqlalchemy import text

    from scheduler.db.engine import create_engine

    async def drop() -> None:
        engine = create_engine(database_url, pool_size=1)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE clients"))
        await engine.dispose()

    asyncio.run(drop())
    done = run_cli("--run-once", "all", env=env)
    assert done.code == 1
    assert "clients" in done.stderr


def test_demo_run_once_all_on_the_embedded_server(tmp_path: Path) -> None:
    done = run_cli("--demo", "--run-once", "all", env=clean_env(), cwd=tmp_path)
    assert done.code == 0, done.stderr  # every path of the demo ends well: no planted failure
    summary = done.json()["summary"]
    assert summary["staleBookings"] == {"cancelled": 1, "errors": []}
    assert summary["bookingReminders"] == {"sent": 2, "errors": []}
    assert summary["paymentReminders"] == {"sent": 2, "errors": []}
    assert summary["notifications"]["deleted"] == 1
    assert "message_retrying" in done.stderr  # one message fails once and is retried
    assert "whatsapp · booking reminder · FE-DEMO-03" in done.stderr  # printed, not on stdout (the JSON)
    assert (tmp_path / ".demo-pgdata" / "PG_VERSION").exists()
    # Each start lays the same demo data afresh, dry runs included: nothing piles up.
    dry = run_cli("--demo", "--run-once", "all", "--dry-run", env=clean_env(), cwd=tmp_path)
    assert dry.code == 0, dry.stderr
    assert dry.json()["summary"]["staleBookings"] == {"wouldCancel": 1, "bookings": ["FE-DEMO-01"], "errors": []}
    again = run_cli("--demo", "--run-once", "all", env=clean_env(), cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert again.json()["summary"] == summary
    # The embedded server was stopped on exit.
    assert not (tmp_path / ".demo-pgdata" / "postmaster.pid").exists()
