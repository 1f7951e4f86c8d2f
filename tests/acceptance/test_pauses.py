"""Pause and resume across two running daemons (the real program, separate processes), and the
gauges every daemon reads from the shared run history: a `--run-once` in a third process, which
succeeds and then fails, shows in both daemons' /metrics (CONTRACT §3, §7).

Timings are injected (tests/program.py): the job fires every second, each daemon polls the pauses
and the history every second.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db import pauses as pauses_db
from scheduler.vocabulary import JobName
from tests.acceptance.cli import clean_env, run_cli
from tests.acceptance.daemons import DaemonProcess, daemon_env, daemons, eventually, stop_gracefully
from tests.database import to_libpq
from tests.factories import add_otp, fetch, scalar

pytestmark = pytest.mark.slow

JOB = JobName.CLEANUP_EXPIRED_OTPS
POLL_SECONDS = 1.0
TIMINGS = {
    "limits": {"pause_poll_seconds": POLL_SECONDS, "history_gauge_seconds": POLL_SECONDS},
    "schedules": {JOB.value: "* * * * * *"},  # every second (a leading field of seconds)
}
SLACK_SECONDS = 3.0  # two busy cores: a poll, a scrape and a log write may each be late


async def metric(http: aiohttp.ClientSession, daemon: DaemonProcess, name: str, **labels: str) -> float:
    async with http.get(f"{daemon.url}/metrics") as response:
        body = await response.text()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not exported")


def paused_skips(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [entry for entry in daemon.events("job_skipped") if entry.get("reason") == "paused"]


async def runs_since(engine: AsyncEngine, moment: datetime) -> list[Any]:
    return await fetch(
        engine,
        "SELECT status, trigger, replica_id FROM flavor_scheduler.job_runs "
        "WHERE job_name = :job AND scheduled_for > :moment ORDER BY scheduled_for",
        job=JOB.value,
        moment=moment,
    )


async def run_once(database_url: str, workdir: Path) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """`flavor-scheduler --run-once JOB` in its own process: exit code, result JSON, log lines."""
    env = clean_env(DATABASE_URL=to_libpq(database_url), LOG_FORMAT="json")
    done = await asyncio.to_thread(run_cli, "--run-once", JOB.value, env=env, cwd=workdir)
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return done.code, done.json(), logs


@pytest.mark.timeout(240)
async def test_pause_and_resume_reach_both_daemons_and_manual_runs_reach_their_gauges(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    env = daemon_env(database_url)
    last_success = "flavor_scheduler_job_last_success_timestamp_seconds"
    last_error = "flavor_scheduler_job_last_error_timestamp_seconds"
    skipped_paused = "flavor_scheduler_job_skipped_total"
    with daemons(2, env, tmp_path, timings=TIMINGS) as replicas:
        for replica in replicas:
            await replica.wait_ready()

        async def ran_twice() -> int | None:
            done = await scalar(
                engine,
                "SELECT count(*) FROM flavor_scheduler.job_runs WHERE job_name = :job AND status = 'success'",
                job=JOB.value,
            )
            return int(done) if done >= 2 else None

        await eventually(ran_twice, within=20, what="the job to run on its schedule")

        # Pause: every fire from then on is skipped in both daemons, each within the poll interval.
        async with engine.begin() as conn:
            await pauses_db.pause(conn, [JOB.value], reason="otp table maintenance", by="ops@bastion")
            paused_at: datetime = await conn.scalar(text("SELECT now()"))
        pause_started = time.monotonic()
        for replica in replicas:

            async def seen(replica: DaemonProcess = replica) -> bool | None:
                return True if replica.events("job_paused") and paused_skips(replica) else None

            await eventually(seen, within=POLL_SECONDS + SLACK_SECONDS, what=f"{replica.name} to honour the pause")
        assert time.monotonic() - pause_started < POLL_SECONDS + SLACK_SECONDS

        async def three_skips_each() -> bool | None:
            return True if all(len(paused_skips(replica)) >= 3 for replica in replicas) else None

        await eventually(three_skips_each, within=20, what="three skipped fires in each daemon")
        for replica in replicas:
            (line,) = replica.events("job_paused")
            assert (line["job"], line["paused_by"], line["reason"]) == (
                JOB.value,
                "ops@bastion",
                "otp table maintenance",
            )
            assert paused_skips(replica)[0]["paused_by"] == "ops@bastion"
        statuses = {row.status for row in await runs_since(engine, paused_at + timedelta(seconds=0.5))}
        assert statuses == {"skipped"}, "a fire after the pause ran"

        async with aiohttp.ClientSession() as http:
            for replica in replicas:
                assert await metric(http, replica, "flavor_scheduler_job_paused", job_name=JOB.value) == 1
                assert (
                    await metric(http, replica, "flavor_scheduler_job_paused", job_name="send_booking_reminders") == 0
                )
                assert await metric(http, replica, skipped_paused, job_name=JOB.value, reason="paused") >= 3

            # While paused, a --run-once elsewhere runs, with a warning; both daemons' gauges see it.
            code, result, logs = await run_once(database_url, tmp_path)
            assert (code, result["success"]) == (0, True)
            assert [entry["paused_by"] for entry in logs if entry["event"] == "running_while_paused"] == ["ops@bastion"]
            manual_finished = await scalar(
                engine,
                "SELECT finished_at FROM flavor_scheduler.job_runs WHERE job_name = :job AND trigger = 'manual'",
                job=JOB.value,
            )
            for replica in replicas:

                async def success_seen(replica: DaemonProcess = replica) -> bool | None:
                    seen = await metric(http, replica, last_success, job_name=JOB.value)
                    return True if seen == manual_finished.timestamp() else None

                await eventually(
                    success_seen, within=POLL_SECONDS + SLACK_SECONDS, what=f"{replica.name}'s last-success gauge"
                )

            # A failing --run-once (a trigger refuses the delete) moves the last-error gauge of both.
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'otp_codes is read-only'; END $$"
                    )
                )
                await conn.execute(
                    text("CREATE TRIGGER refuse BEFORE DELETE ON otp_codes FOR EACH ROW EXECUTE FUNCTION refuse()")
                )
            await add_otp(engine, datetime.now(UTC) - timedelta(minutes=1))
            code, result, _ = await run_once(database_url, tmp_path)
            assert (code, result["outcome"]) == (1, "error")
            failed_at = await scalar(
                engine,
                "SELECT finished_at FROM flavor_scheduler.job_runs WHERE job_name = :job AND status = 'error'",
                job=JOB.value,
            )
            for replica in replicas:

                async def error_seen(replica: DaemonProcess = replica) -> bool | None:
                    seen = await metric(http, replica, last_error, job_name=JOB.value)
                    return True if seen == failed_at.timestamp() else None

                await eventually(
                    error_seen, within=POLL_SECONDS + SLACK_SECONDS, what=f"{replica.name}'s last-error gauge"
                )
                assert await metric(http, replica, last_success, job_name=JOB.value) == manual_finished.timestamp()
            async with engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER refuse ON otp_codes"))

            # Resume: both see it within the poll interval, and the fires run again.
            async with engine.begin() as conn:
                await pauses_db.resume(conn, [JOB.value])
                resumed_at: datetime = await conn.scalar(text("SELECT now()"))
            for replica in replicas:

                async def resumed(replica: DaemonProcess = replica) -> bool | None:
                    paused = await metric(http, replica, "flavor_scheduler_job_paused", job_name=JOB.value)
                    return True if paused == 0 and replica.events("job_resumed") else None

                await eventually(resumed, within=POLL_SECONDS + SLACK_SECONDS, what=f"{replica.name} to resume")

            async def runs_again() -> bool | None:
                rows = await runs_since(engine, resumed_at + timedelta(seconds=0.5))
                return True if sum(row.status == "success" for row in rows) >= 2 else None

            await eventually(runs_again, within=20, what="the fires to run again after the resume")
            assert {row.status for row in await runs_since(engine, resumed_at + timedelta(seconds=0.5))} <= {
                "success",
                "running",
            }
        for replica in replicas:
            await stop_gracefully(replica)
