"""Pauses as the runs see them (CONTRACT §3, §7): a paused job's scheduled, catch-up and retry fires
are skipped at once, counted and recorded, so no later catch-up runs them; a run asked for by hand
runs, with a warning; an abandoned run waits for the resume. And the daemon follows the pauses and
the shared run history within its poll intervals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from scheduler.app import App
from scheduler.clock import FrozenClock
from scheduler.db import pauses as pauses_db
from scheduler.limits import Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.records import Fire
from scheduler.schedule import slot_key
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, SkipReason, Trigger
from tests.conftest import NOW, recording_app
from tests.factories import add_booking, fetch
from tests.faults.support import wait_until
from tests.integration.test_daemon import daemon_settings, started

JOB = JobName.CLEANUP_EXPIRED_OTPS
PERTH = ZoneInfo("Australia/Perth")
HOURLY = "0 * * * *"


async def pause(engine: AsyncEngine, job: JobName = JOB, reason: str | None = "disk full") -> None:
    async with engine.begin() as conn:
        await pauses_db.pause(conn, [job.value], reason=reason, by="ops@bastion")


async def resume(engine: AsyncEngine, job: JobName = JOB) -> None:
    async with engine.begin() as conn:
        await pauses_db.resume(conn, [job.value])


def fire_at(hours_ago: int) -> Fire:
    at = NOW - timedelta(hours=hours_ago)
    return Fire(slot_key(HOURLY, PERTH, at), at)


async def runs_of(engine: AsyncEngine, job: JobName = JOB) -> list[Any]:
    return await fetch(
        engine,
        "SELECT slot, trigger, status, attempt FROM flavor_scheduler.job_runs "
        "WHERE job_name = :job ORDER BY started_at",
        job=job.value,
    )


def sample(app: App, name: str, **labels: str) -> float | None:
    return app.registry.get_sample_value(name, labels)


async def test_a_fire_of_a_paused_job_is_skipped_at_once_counted_and_recorded(app: App, engine: AsyncEngine) -> None:
    await pause(engine)
    with capture_logs() as logs:
        result = await app.runner.run(JOB, trigger=Trigger.SCHEDULE, fire=fire_at(0))

    assert result.skipped is SkipReason.PAUSED
    assert result.success and not result.errors  # a pause is no failure: no fire retry follows
    assert sample(app, "flavor_scheduler_job_skipped_total", job_name=JOB.value, reason="paused") == 1
    assert sample(app, "flavor_scheduler_job_paused", job_name=JOB.value) == 1  # before any poll
    (skipped,) = [entry for entry in logs if entry["event"] == "job_skipped"]
    assert skipped | {"reason": "paused", "paused_by": "ops@bastion", "pause_reason": "disk full"} == skipped
    assert skipped["slot"] == fire_at(0).slot
    assert [(row.slot, row.trigger, row.status) for row in await runs_of(engine)] == [
        (fire_at(0).slot, "schedule", "skipped")
    ]

    await resume(engine)
    # A start now (within the catch-up window) finds the skipped fire recorded and does not run it
    # late; the same fire of a job nobody ran is caught up, as a control.
    app.history.installed_at = NOW - timedelta(days=1)
    missed = await app.history.missed_fires({JOB: HOURLY, JobName.CLEANUP_OLD_AUDIT_LOGS: HOURLY}, PERTH)
    assert missed == [(JobName.CLEANUP_OLD_AUDIT_LOGS, fire_at(0))]

    # Resumed: the next fire runs.
    result = await app.runner.run(JOB, trigger=Trigger.SCHEDULE, fire=fire_at(-1))
    assert result.skipped is None and result.success
    assert [row.status for row in await runs_of(engine)] == ["skipped", "success"]


async def test_the_catch_up_of_a_paused_job_is_skipped_and_not_run_after_the_resume(
    app: App, engine: AsyncEngine
) -> None:
    half_past = "30 * * * *"  # NOW is on the hour: the latest fire was 30 minutes ago
    app.history.installed_at = NOW - timedelta(days=1)
    schedules = {JOB: half_past, JobName.CLEANUP_OLD_AUDIT_LOGS: half_past}
    ((_, fire), (_, control)) = await app.history.missed_fires(schedules, PERTH)
    await pause(engine)

    skipped = await app.runner.run(JOB, trigger=Trigger.CATCH_UP, fire=fire)
    assert skipped.skipped is SkipReason.PAUSED
    await resume(engine)

    # The next start's catch-up: the paused job's fire is recorded as skipped, the other is still owed.
    assert await app.history.missed_fires(schedules, PERTH) == [(JobName.CLEANUP_OLD_AUDIT_LOGS, control)]


async def test_a_retry_of_a_failed_fire_while_paused_is_skipped_and_keeps_the_error(
    app: App, engine: AsyncEngine
) -> None:
    fire = fire_at(1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, scheduled_for, trigger, status, "
                "replica_id, started_at, finished_at, errors) VALUES (:id, :job, :slot, :at, 'schedule', 'error', "
                "'r:1:a', :at, :at, '[\"database error\"]')"
            ),
            {"id": uuid4(), "job": JOB.value, "slot": fire.slot, "at": fire.scheduled_for},
        )
    await pause(engine)

    result = await app.runner.run(JOB, trigger=Trigger.RETRY, fire=fire)

    assert result.skipped is SkipReason.PAUSED
    assert [(row.status, row.attempt) for row in await runs_of(engine)] == [("error", 1)]
    assert sample(app, "flavor_scheduler_job_skipped_total", job_name=JOB.value, reason="paused") == 1


async def test_a_run_asked_for_by_hand_runs_with_a_warning(app: App, engine: AsyncEngine) -> None:
    await pause(engine, reason=None)
    with capture_logs() as logs:
        manual = await app.runner.run(JOB, trigger=Trigger.MANUAL)
        http = await app.runner.run(JOB, trigger=Trigger.HTTP)
        dry = await app.runner.run(JOB, trigger=Trigger.MANUAL, dry_run=True)

    assert manual.success and manual.skipped is None
    assert http.success and http.skipped is None
    assert dry.success and dry.dry_run
    warnings = [entry for entry in logs if entry["event"] == "running_while_paused"]
    assert [(entry["trigger"], entry["paused_by"], entry["log_level"]) for entry in warnings] == [
        ("manual", "ops@bastion", "warning"),
        ("http", "ops@bastion", "warning"),
        ("manual", "ops@bastion", "warning"),
    ]
    assert [(row.trigger, row.status) for row in await runs_of(engine)] == [("manual", "success"), ("http", "success")]
    assert sample(app, "flavor_scheduler_job_skipped_total", job_name=JOB.value, reason="paused") == 0


async def test_an_abandoned_run_of_a_paused_job_waits_for_the_resume(app: App, engine: AsyncEngine) -> None:
    run_id = await _abandoned_run(engine)
    abandoned = dict(await app.history.abandoned())
    await pause(engine)

    refused = await app.history.take_over(JOB, abandoned[JOB])
    assert refused.run_id is None
    await resume(engine)
    taken = await app.history.take_over(JOB, abandoned[JOB])
    assert taken.run_id == run_id


async def _abandoned_run(engine: AsyncEngine) -> UUID:
    run_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, trigger, status, replica_id, "
                "started_at, lease_expires_at) VALUES (:id, :job, 'slot-1', 'schedule', 'running', 'dead:1:a', "
                ":at, now() - interval '1 second')"
            ),
            {"id": run_id, "job": JOB.value, "at": NOW},
        )
    return run_id


# The daemon following the database ------------------------------------------------------------

FOLLOWING = Limits(pause_poll_seconds=0.1, history_gauge_seconds=0.1)


async def test_the_daemon_follows_pauses_and_the_shared_history_within_its_intervals(
    database_url: str, engine: AsyncEngine
) -> None:
    async with started(daemon_settings(database_url), limits=FOLLOWING) as running:
        app = running.app
        assert sample(app, "flavor_scheduler_job_paused", job_name=JOB.value) == 0
        await pause(engine)
        await wait_until(
            lambda: sample(app, "flavor_scheduler_job_paused", job_name=JOB.value) == 1, within=5, what="job_paused 1"
        )
        (seen,) = running.events("job_paused")
        assert (seen["job"], seen["paused_by"], seen["reason"]) == (JOB.value, "ops@bastion", "disk full")
        assert running.daemon.timers.paused.keys() == {JOB.value}
        await resume(engine)
        await wait_until(
            lambda: sample(app, "flavor_scheduler_job_paused", job_name=JOB.value) == 0, within=5, what="job_paused 0"
        )
        assert [entry["job"] for entry in running.events("job_resumed")] == [JOB.value]

        # Runs another process finished (a --run-once from cron, another replica) reach the gauges.
        success_at, error_at = NOW - timedelta(minutes=10), NOW - timedelta(minutes=2)
        for status, at in (("success", success_at), ("error", error_at)):
            await _finished_run(engine, status, at)
        await wait_until(
            lambda: (
                (
                    sample(app, "flavor_scheduler_job_last_success_timestamp_seconds", job_name=JOB.value),
                    sample(app, "flavor_scheduler_job_last_error_timestamp_seconds", job_name=JOB.value),
                )
                == (success_at.timestamp(), error_at.timestamp())
            ),
            within=5,
            what="the last-success and last-error gauges to follow the history",
        )
        # Never back: an older run found later does not move them.
        await _finished_run(engine, "success", success_at - timedelta(days=1))
        await running.daemon.timers.refresh_history_gauges()
        assert sample(app, "flavor_scheduler_job_last_success_timestamp_seconds", job_name=JOB.value) == (
            success_at.timestamp()
        )
    assert running.exit_code == 0


async def _finished_run(engine: AsyncEngine, status: str, at: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, trigger, status, replica_id, started_at, "
                "finished_at) VALUES (:id, :job, 'manual', :status, 'cron:1:a', :at, :at)"
            ),
            {"id": uuid4(), "job": JOB.value, "status": status, "at": at},
        )


# Progress of a long run -------------------------------------------------------------------------


@pytest.fixture
async def slow_app(settings: Settings, clock: FrozenClock) -> AsyncIterator[tuple[App, RecordingTransport]]:
    whatsapp, email = RecordingTransport(Channel.WHATSAPP), RecordingTransport(Channel.EMAIL)
    async with recording_app(settings, clock, whatsapp, email, limits=Limits(progress_log_seconds=0.05)) as app:
        yield app, whatsapp


async def test_a_long_run_logs_what_it_has_done_so_far(
    slow_app: tuple[App, RecordingTransport], engine: AsyncEngine
) -> None:
    app, whatsapp = slow_app
    for _ in range(2):
        await add_booking(engine, status="pending", payment_status="pending", created_at=NOW - timedelta(days=2))
    whatsapp.pause()  # the WhatsApp notices hang: the run goes on, emails sent, while it waits
    with capture_logs() as logs:
        task = asyncio.ensure_future(app.runner.run(JobName.CLEANUP_STALE_BOOKINGS, trigger=Trigger.MANUAL))

        def progressed() -> bool:
            lines = [entry for entry in logs if entry["event"] == "job_progress"]
            return bool(lines) and lines[-1]["done"] == {"cancelled": 2, "sent": 4}

        await wait_until(progressed, within=10, what="a progress line with the cancellations and the emails")
        whatsapp.resume()
        result = await task
    assert result.success, result.errors
    assert result.details["messagesSent"] == 8
    line = next(entry for entry in logs if entry["event"] == "job_progress")  # job and run id come bound
    assert (line["log_level"], line["elapsed_seconds"] >= 0) == ("info", True)
