"""The daemon in this process, on a real database: start-up and readiness, the HTTP endpoints
(CONTRACT §6), the metrics (§7), catch-up and take-over (§5), and a graceful stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

import scheduler
from scheduler.app import App, build
from scheduler.daemon import Daemon
from scheduler.db import migrate
from scheduler.db.engine import create_engine
from scheduler.db.tables import deliveries, job_runs
from scheduler.lifecycle import Phase
from scheduler.limits import PRODUCTION, Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.schedule import slot_key
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, RunOutcome, SkipReason
from tests import database as test_database
from tests.database import to_libpq, with_database
from tests.factories import add_booking, add_notification, fetch, scalar
from tests.fakes.fixtures import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.faults.support import wait_until

QUIET = "0 0 1 1 *"  # once a year: nothing fires during a test unless the test makes it
SECRET = "cron-secret-for-the-tests"
CALLBACK_URL = "https://scheduler.example.com/api/twilio/status"
START_TIMEOUT_SECONDS = 20


def daemon_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {f"schedule_{job.value}": QUIET for job in JobName}
    values.update(overrides)
    return Settings(
        _env_file=None,
        database_url=to_libpq(database_url),
        http_host="127.0.0.1",
        http_port=0,
        timezone="UTC",
        quiet_hours="off",
        **values,
    )


@dataclass
class Running:
    """A daemon started by `started()`, with its recording transports."""

    daemon: Daemon
    task: asyncio.Task[int]
    whatsapp: RecordingTransport
    email: RecordingTransport
    exit_code: int | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def app(self) -> App:
        return self.daemon.app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.http.port}"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry["event"] == name]


async def until(app: App, phase: Phase, task: asyncio.Task[int]) -> None:
    """Wait for the daemon to reach `phase`, failing at once if the daemon ends first."""
    waiter = asyncio.ensure_future(app.lifecycle.reached(phase))
    try:
        await asyncio.wait({waiter, task}, timeout=START_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not app.lifecycle.has_reached(phase) or (task.done() and phase is not Phase.STOPPING):
        raise AssertionError(f"the daemon ended first (exit {task.result()})" if task.done() else "timed out")


@asynccontextmanager
async def started(
    settings: Settings,
    *,
    wait_ready: bool = True,
    prepare: Callable[[App], None] | None = None,
    limits: Limits = PRODUCTION,
) -> AsyncIterator[Running]:
    """Run a daemon (signal handling off) until the block ends, then stop it and close the app."""
    whatsapp, email = RecordingTransport(Channel.WHATSAPP), RecordingTransport(Channel.EMAIL)
    app = build(settings, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email}, limits=limits)
    if prepare is not None:
        prepare(app)
    daemon = Daemon(app, handle_signals=False)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        running = Running(daemon, task, whatsapp, email, logs=logs)
        try:
            await until(app, Phase.READY if wait_ready else Phase.WAITING_FOR_DATABASE, task)
            yield running
        finally:
            daemon.stop()
            whatsapp.resume()
            email.resume()
            running.exit_code = await asyncio.wait_for(task, timeout=60)
            await app.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def runs(engine: AsyncEngine) -> list[Any]:
    return await fetch(
        engine,
        "SELECT job_name, slot, scheduled_for, trigger, status, replica_id, attempt, lease_expires_at "
        "FROM flavor_scheduler.job_runs ORDER BY started_at",
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Start-up and health ---------------------------------------------------------------------------


async def test_ready_only_once_the_database_answers(
    database_url: str,
    test_databases: test_database.DatabaseFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = make_url(database_url).database
    await _allow_connections(test_databases, name, allowed=False)
    failed = asyncio.Event()

    def watch(app: App) -> None:
        original = app.prepare_database

        async def prepare_database() -> None:
            try:
                await original()
            except Exception:
                failed.set()
                raise

        monkeypatch.setattr(app, "prepare_database", prepare_database)

    settings = daemon_settings(database_url, cron_secret=SECRET)
    async with started(settings, wait_ready=False, prepare=watch) as running:
        await asyncio.wait_for(failed.wait(), START_TIMEOUT_SECONDS)
        async with http.get(f"{running.url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{running.url}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"status": "not ready"}  # why goes to the log only (CONTRACT §6)
        assert "waiting for the database" in running.events("readiness_changed")[-1]["problem"]
        async with http.get(f"{running.url}/api/cron/cleanup", headers=bearer(SECRET)) as response:
            assert response.status == 503
        waiting = await scrape(http, running)
        assert value(waiting, "flavor_scheduler_ready", "flavor_scheduler_ready") == 0
        next_run = "flavor_scheduler_job_next_run_timestamp_seconds"
        for job in JobName:  # known from the schedule before the database answers
            assert value(waiting, next_run, next_run, job_name=job) > datetime.now(UTC).timestamp(), job
        await _allow_connections(test_databases, name, allowed=True)
        await until(running.app, Phase.READY, running.task)
        async with http.get(f"{running.url}/readyz") as response:
            assert response.status == 200
        assert value(await scrape(http, running), "flavor_scheduler_ready", "flavor_scheduler_ready") == 1
        (unavailable, *_) = running.events("database_unavailable")
        assert unavailable["attempt"] == 1
        assert "connections" in unavailable["error"]
    assert running.exit_code == 0


async def _allow_connections(databases: test_database.DatabaseFactory, name: str | None, *, allowed: bool) -> None:
    """Make the test's database refuse (or accept again) every connection, as a server that is down."""
    engine = create_engine(with_database(databases.url, "postgres"), pool_size=1)
    try:
        async with engine.connect() as connection:
            conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                await conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
                )
    finally:
        await engine.dispose()


async def test_probes_and_scrapes_in_flight_share_one_readiness_query(
    database_url: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz and the ready gauge ask the database; a flood of them must not be a flood of queries."""
    async with started(daemon_settings(database_url)) as running:
        original = migrate.current_revision
        queries = 0

        async def slow_revision(engine: AsyncEngine) -> str | None:
            nonlocal queries
            queries += 1
            await asyncio.sleep(1.0)  # long enough for the whole flood to arrive while it runs
            return await original(engine)

        monkeypatch.setattr(migrate, "current_revision", slow_revision)

        async def status(path: str) -> int:
            async with http.get(f"{running.url}{path}") as response:
                return response.status

        statuses = await asyncio.gather(*(status(path) for path in ("/readyz", "/metrics") * 50))
        assert set(statuses) == {200}
        assert queries <= 2, f"{queries} readiness queries for 100 requests"  # a straggler may start a second
        assert value(await scrape(http, running), "flavor_scheduler_ready", "flavor_scheduler_ready") == 1


async def test_a_missing_required_table_stops_the_start_with_exit_1(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE performers"))
    app = build(daemon_settings(database_url), transports={})
    try:
        with capture_logs() as logs:
            assert await Daemon(app, handle_signals=False).run() == 1
    finally:
        await app.aclose()
    (error,) = [entry for entry in logs if entry["event"] == "platform_schema_error"]
    assert "performers" in error["error"]


async def test_ready_line_names_every_job_and_systemd_hears_ready_and_stopping(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    loop = asyncio.get_running_loop()
    try:
        settings = daemon_settings(database_url, schedule_cleanup_expired_otps="off")
        async with started(settings) as running:
            assert await asyncio.wait_for(loop.sock_recv(notify, 64), 5) == b"READY=1"
            (ready,) = running.events("ready")
            assert ready["next_runs"]["cleanup_expired_otps"] == "off"
            assert ready["next_runs"]["send_booking_reminders"].endswith("+00:00")
            assert set(ready["next_runs"]) == {job.value for job in JobName}
        assert await asyncio.wait_for(loop.sock_recv(notify, 64), 5) == b"STOPPING=1"
    finally:
        notify.close()
    assert running.exit_code == 0


async def test_a_background_task_that_dies_stops_the_daemon_with_exit_1(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def break_the_gauge(app: App) -> None:
        async def refresh_pending_gauge() -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.dispatcher, "refresh_pending_gauge", refresh_pending_gauge)

    async with started(daemon_settings(database_url), prepare=break_the_gauge) as running:
        assert await asyncio.wait_for(asyncio.shield(running.task), 10) == 1
    (died,) = running.events("background_task_died")
    assert died["task"] == "pending_gauge"


# Metrics (CONTRACT §7) ---------------------------------------------------------------------------

CONTRACT_METRICS: dict[str, tuple[str, set[str]]] = {
    "flavor_scheduler_job_runs_total": ("counter", {"job_name", "outcome"}),
    "flavor_scheduler_job_skipped_total": ("counter", {"job_name", "reason"}),
    "flavor_scheduler_job_duration_seconds": ("histogram", {"job_name"}),
    "flavor_scheduler_job_running": ("gauge", {"job_name"}),
    "flavor_scheduler_job_last_success_timestamp_seconds": ("gauge", {"job_name"}),
    "flavor_scheduler_job_paused": ("gauge", {"job_name"}),
    # Beyond the contract's list: the last-error gauge alert rules read (from the shared history).
    "flavor_scheduler_job_last_error_timestamp_seconds": ("gauge", {"job_name"}),
    "flavor_scheduler_job_next_run_timestamp_seconds": ("gauge", {"job_name"}),
    "flavor_scheduler_job_errors_total": ("counter", {"job_name"}),
    "flavor_scheduler_rows_deleted_total": ("counter", {"job_name", "table"}),
    "flavor_scheduler_bookings_cancelled_total": ("counter", set()),
    "flavor_scheduler_reminders_sent_total": ("counter", {"kind", "channel"}),
    "flavor_scheduler_messages_total": ("counter", {"channel", "kind", "outcome"}),
    "flavor_scheduler_messages_pending": ("gauge", {"channel"}),
    "flavor_scheduler_message_status_total": ("counter", {"channel", "status"}),
    "flavor_scheduler_provider_request_duration_seconds": ("histogram", {"provider", "outcome"}),
    "flavor_scheduler_build_info": ("gauge", {"version"}),
    "flavor_scheduler_ready": ("gauge", set()),
}


async def scrape(http: aiohttp.ClientSession, running: Running) -> dict[str, Any]:
    async with http.get(f"{running.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return {family.name: family for family in text_string_to_metric_families(body)}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, f"{sample}{labels}: {len(found)} series"
    return float(found[0])


async def test_metrics_are_the_contract_s_names_types_and_labels(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    async with started(daemon_settings(database_url, schedule_cleanup_expired_otps="off")) as running:
        families = await scrape(http, running)
    # prometheus_client adds a `<name>_created` gauge beside each counter and histogram.
    ours = {name for name in families if name.startswith("flavor_scheduler_") and not name.endswith("_created")}
    # The parser names a counter's family without `_total`; the samples keep it.
    expected_families = {name.removesuffix("_total") for name in CONTRACT_METRICS}
    assert ours == expected_families
    for name, (kind, labels) in CONTRACT_METRICS.items():
        family = families[name.removesuffix("_total")]
        assert family.type == kind, name
        assert family.documentation, f"{name} has no HELP text"
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert set(sample.labels) - {"le"} == labels, (sample.name, sample.labels)
            if kind == "counter":
                assert sample.name == name
    assert families["flavor_scheduler_ready"].samples[0].value == 1
    assert {"process_resident_memory_bytes", "process_open_fds", "process_max_fds"} <= set(families)


async def test_every_job_s_series_exist_at_zero_from_start(database_url: str, http: aiohttp.ClientSession) -> None:
    async with started(daemon_settings(database_url, schedule_cleanup_expired_otps="off")) as running:
        families = await scrape(http, running)
    now = datetime.now(UTC).timestamp()
    for job in JobName:
        for outcome in RunOutcome:
            assert (
                value(
                    families,
                    "flavor_scheduler_job_runs",
                    "flavor_scheduler_job_runs_total",
                    job_name=job,
                    outcome=outcome,
                )
                == 0
            )
        for reason in SkipReason:
            assert (
                value(
                    families,
                    "flavor_scheduler_job_skipped",
                    "flavor_scheduler_job_skipped_total",
                    job_name=job,
                    reason=reason,
                )
                == 0
            )
        assert value(families, "flavor_scheduler_job_errors", "flavor_scheduler_job_errors_total", job_name=job) == 0
        assert value(families, "flavor_scheduler_job_running", "flavor_scheduler_job_running", job_name=job) == 0
        duration = "flavor_scheduler_job_duration_seconds"
        assert value(families, duration, f"{duration}_count", job_name=job) == 0
        for last in (
            "flavor_scheduler_job_last_success_timestamp_seconds",
            "flavor_scheduler_job_last_error_timestamp_seconds",
        ):
            assert value(families, last, last, job_name=job) == 0
        assert value(families, "flavor_scheduler_job_paused", "flavor_scheduler_job_paused", job_name=job) == 0
        next_run = value(
            families,
            "flavor_scheduler_job_next_run_timestamp_seconds",
            "flavor_scheduler_job_next_run_timestamp_seconds",
            job_name=job,
        )
        if job is JobName.CLEANUP_EXPIRED_OTPS:
            assert next_run == 0  # disabled
        else:
            assert now < next_run <= now + 366 * 86400
    for channel in Channel:
        assert (
            value(families, "flavor_scheduler_messages_pending", "flavor_scheduler_messages_pending", channel=channel)
            == 0
        )
    (info,) = families["flavor_scheduler_build_info"].samples
    assert info.value == 1
    assert info.labels["version"] == scheduler.__version__


# The cron triggers (CONTRACT §6) ------------------------------------------------------------------


async def test_cron_routes_answer_404_without_a_secret(database_url: str, http: aiohttp.ClientSession) -> None:
    async with started(daemon_settings(database_url)) as running:
        for method in ("GET", "POST"):
            for group in ("cleanup", "reminders"):
                async with http.request(method, f"{running.url}/api/cron/{group}", headers=bearer("x")) as response:
                    assert response.status == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(SECRET + "x"),
        bearer(SECRET[:-1]),
        {"Authorization": SECRET},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "longer", "shorter", "no_scheme", "basic", "empty"],
)
async def test_cron_routes_refuse_a_missing_or_wrong_token(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine, headers: dict[str, str]
) -> None:
    async with started(daemon_settings(database_url, cron_secret=SECRET)) as running:
        for method in ("GET", "POST"):
            async with http.request(method, f"{running.url}/api/cron/cleanup", headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await runs(engine) == []


async def test_cron_routes_run_the_group_and_answer_its_json(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    async with started(daemon_settings(database_url, cron_secret=SECRET)) as running:
        async with http.get(f"{running.url}/api/cron/cleanup", headers=bearer(SECRET)) as response:
            assert response.status == 200
            cleanup = await response.json()
        async with http.post(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)) as response:
            assert response.status == 200
            reminders = await response.json()
        async with http.put(f"{running.url}/api/cron/cleanup", headers=bearer(SECRET)) as response:
            assert response.status == 405
        big = b"x" * (65 * 1024)
        async with http.post(f"{running.url}/api/cron/cleanup", headers=bearer(SECRET), data=big) as response:
            assert response.status == 413

    assert set(cleanup) == {"success", "timestamp", "summary"}
    assert cleanup["success"] is True
    assert cleanup["timestamp"].endswith("Z")
    assert cleanup["summary"] == {
        "staleBookings": {"cancelled": 0, "errors": []},
        "notifications": {"deleted": 0, "errors": []},
        "otps": {"deleted": 0, "errors": []},
        "auditLogs": {"deleted": 0, "errors": []},
        "schedulerHistory": {"deleted": 0, "errors": []},
    }
    assert reminders["summary"] == {
        "bookingReminders": {"sent": 0, "errors": []},
        "paymentReminders": {"sent": 0, "errors": []},
    }
    # Recorded in the run history like any run.
    history = await runs(engine)
    assert [(row.job_name, row.trigger, row.status, row.slot) for row in history] == [
        (job, "http", "success", None)
        for job in (
            "cleanup_stale_bookings",
            "cleanup_old_notifications",
            "cleanup_expired_otps",
            "cleanup_old_audit_logs",
            "cleanup_scheduler_history",
            "send_booking_reminders",
            "send_payment_reminders",
        )
    ]


async def test_a_group_already_running_answers_409(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    await add_booking(engine, event_date=datetime.now(UTC) + timedelta(hours=10))
    async with started(daemon_settings(database_url, cron_secret=SECRET)) as running:
        running.whatsapp.pause()  # the reminder run waits in its first send
        first = asyncio.create_task(http.post(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)))
        await asyncio.wait_for(running.whatsapp.wait_for_attempts(1), 10)

        async with http.get(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)) as response:
            assert response.status == 409
            assert (await response.json())["success"] is False
        # A scheduled fire of a job the trigger holds is skipped, and counted.
        await fire_now(running, JobName.SEND_BOOKING_REMINDERS)
        families = await scrape(http, running)
        skipped = "flavor_scheduler_job_skipped_total"
        labels = {"job_name": "send_booking_reminders", "reason": "already_running"}
        assert value(families, "flavor_scheduler_job_skipped", skipped, **labels) == 1
        # Another group is free.
        async with http.get(f"{running.url}/api/cron/cleanup", headers=bearer(SECRET)) as response:
            assert response.status == 200

        running.whatsapp.resume()
        async with await first as response:
            assert response.status == 200
            body = await response.json()
    assert body["summary"]["bookingReminders"] == {"sent": 1, "errors": []}


async def test_a_group_running_in_another_replica_answers_409(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            job_runs.insert().values(
                id=uuid4(), job_name="send_payment_reminders", trigger="schedule", status="running",
                replica_id="elsewhere:1:abc", dry_run=False, attempt=1, started_at=now,
                lease_expires_at=now + timedelta(minutes=5),
            )
        )  # fmt: skip
    async with (
        started(daemon_settings(database_url, cron_secret=SECRET)) as running,
        http.post(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)) as response,
    ):
        assert response.status == 409
        body = await response.json()
    assert body["success"] is False
    assert "already running" in body["summary"]["paymentReminders"]["errors"][0]


async def fire_now(running: Running, job: JobName, at: datetime | None = None) -> None:
    """Make the schedule fire `job` as if `at` (default now) had come; return once it was handed over."""
    scheduler = running.app.schedule.scheduler
    submitted = asyncio.Event()

    def listener(event: Any) -> None:
        if event.job_id == job.value:
            submitted.set()

    scheduler.add_listener(listener, EVENT_JOB_SUBMITTED)
    try:
        scheduler.modify_job(job.value, next_run_time=at or datetime.now(UTC))
        await asyncio.wait_for(submitted.wait(), 10)
    finally:
        scheduler.remove_listener(listener)


# Scheduled fires, catch-up, take-over (CONTRACT §5) ------------------------------------------------


async def test_a_scheduled_fire_runs_once_per_slot(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    at = (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)  # both fires below are due
    async with started(daemon_settings(database_url)) as running:
        await fire_now(running, JobName.SEND_PAYMENT_REMINDERS, at)
        await running.app.inflight.idle()
        # The same slot again (another replica's fire, or the fall-back hour's second 02:00).
        await fire_now(running, JobName.SEND_PAYMENT_REMINDERS, at + timedelta(seconds=30))
        await running.app.inflight.idle()
        families = await scrape(http, running)
    (row,) = await runs(engine)
    assert (row.job_name, row.trigger, row.status) == ("send_payment_reminders", "schedule", "success")
    assert row.slot == slot_key(QUIET, UTC, at) == at.strftime("%Y-%m-%dT%H:%M")
    assert row.scheduled_for == at
    skipped = "flavor_scheduler_job_skipped_total"
    labels = {"job_name": "send_payment_reminders", "reason": "claimed_elsewhere"}
    assert value(families, "flavor_scheduler_job_skipped", skipped, **labels) == 1
    runs_total = "flavor_scheduler_job_runs_total"
    assert (
        value(families, "flavor_scheduler_job_runs", runs_total, job_name="send_payment_reminders", outcome="success")
        == 1
    )
    assert (
        value(
            families,
            "flavor_scheduler_job_last_success_timestamp_seconds",
            "flavor_scheduler_job_last_success_timestamp_seconds",
            job_name="send_payment_reminders",
        )
        > 0
    )


def daily_at(moment: datetime) -> str:
    return f"{moment.minute} {moment.hour} * * *"


async def _install(engine: AsyncEngine, installed_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO flavor_scheduler.installation (id, installed_at) VALUES (1, :at)"), {"at": installed_at}
        )


async def test_a_fire_missed_within_six_hours_runs_once_at_start(database_url: str, engine: AsyncEngine) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await _install(engine, now - timedelta(hours=10))
    two_hours_ago, eight_hours_ago, one_hour_ago = (now - timedelta(hours=h) for h in (2, 8, 1))
    async with engine.begin() as conn:  # a fire another replica already ran
        await conn.execute(
            job_runs.insert().values(
                id=uuid4(), job_name="cleanup_expired_otps", slot=slot_key(daily_at(one_hour_ago), UTC, one_hour_ago),
                scheduled_for=one_hour_ago, trigger="schedule", status="success", replica_id="elsewhere:1:abc",
                dry_run=False, attempt=1, started_at=one_hour_ago, finished_at=one_hour_ago,
            )
        )  # fmt: skip
    settings = daemon_settings(
        database_url,
        schedule_cleanup_old_notifications=daily_at(two_hours_ago),
        schedule_cleanup_old_audit_logs=daily_at(eight_hours_ago),
        schedule_cleanup_expired_otps=daily_at(one_hour_ago),
    )
    for _restart in range(2):  # the second start finds the fire recorded
        async with started(settings) as running:
            await running.app.inflight.idle()
    history = await runs(engine)
    assert [(row.job_name, row.trigger, row.status, row.scheduled_for) for row in history] == [
        ("cleanup_expired_otps", "schedule", "success", one_hour_ago),
        ("cleanup_old_notifications", "catch_up", "success", two_hours_ago),
    ]


async def test_a_new_installation_catches_nothing_up(database_url: str, engine: AsyncEngine) -> None:
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    settings = daemon_settings(database_url, schedule_cleanup_old_notifications=daily_at(two_hours_ago))
    async with started(settings) as running:
        await running.app.inflight.idle()
    assert await runs(engine) == []
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.installation") == 1


async def test_an_abandoned_run_is_taken_over_and_finished(database_url: str, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    run_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            job_runs.insert().values(
                id=run_id, job_name="cleanup_expired_otps", slot="2026-01-01T02:00", scheduled_for=now,
                trigger="schedule", status="running", replica_id="dead:1:abc", dry_run=False, attempt=1,
                started_at=now - timedelta(minutes=5), lease_expires_at=now - timedelta(seconds=1),
            )
        )  # fmt: skip
    async with started(daemon_settings(database_url)) as running:
        await running.app.inflight.idle()
    (row,) = await runs(engine)
    assert (row.status, row.replica_id, row.attempt, row.slot) == (
        "success",
        running.app.replica_id,
        2,
        "2026-01-01T02:00",
    )
    (taken,) = running.events("run_taken_over")
    assert taken["previous_replica"] == "dead:1:abc"


# Stopping ------------------------------------------------------------------------------------------


async def test_stop_lets_the_run_finish_the_item_in_hand_and_gives_the_rest_back(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    for _ in range(3):
        await add_booking(engine, event_date=datetime.now(UTC) + timedelta(hours=10))
    async with started(daemon_settings(database_url, cron_secret=SECRET)) as running:
        running.whatsapp.pause()
        request = asyncio.create_task(http.post(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)))
        await asyncio.wait_for(running.whatsapp.wait_for_attempts(1), 10)
        running.daemon.stop()
        running.whatsapp.resume()
        async with await request as response:  # answered before the HTTP server stops
            assert response.status in (200, 500)
    assert running.exit_code == 0
    # Nothing half done: every message is sent (and recorded as such) or owed, none left in flight.
    statuses = dict(await fetch(engine, "SELECT status, count(*) FROM flavor_scheduler.deliveries GROUP BY status"))
    assert set(statuses) <= {"sent", "pending"}
    assert statuses["sent"] == len(running.whatsapp.accepted) + len(running.email.accepted)
    assert sum(statuses.values()) == 12  # 3 bookings x (client, performer) x (WhatsApp, email)
    (row,) = [row for row in await runs(engine) if row.job_name == "send_booking_reminders"]
    # Handed back to be resumed: still running, lease already expired.
    assert row.status == "running"
    assert row.lease_expires_at <= datetime.now(UTC)


async def test_runs_still_going_at_the_shutdown_timeout_are_cancelled_and_released(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    await add_booking(engine, event_date=datetime.now(UTC) + timedelta(hours=10))
    settings = daemon_settings(database_url, cron_secret=SECRET, shutdown_timeout_seconds=0.5)
    async with started(settings) as running:
        running.whatsapp.pause()
        request = asyncio.create_task(http.post(f"{running.url}/api/cron/reminders", headers=bearer(SECRET)))
        await asyncio.wait_for(running.whatsapp.wait_for_attempts(1), 10)
        running.daemon.stop()
        assert await asyncio.wait_for(asyncio.shield(running.task), 10) == 0
    with pytest.raises(aiohttp.ClientError):
        await request
    assert running.events("shutdown_timeout")
    (row,) = [row for row in await runs(engine) if row.job_name == "send_booking_reminders"]
    assert row.status == "running"
    assert row.lease_expires_at <= datetime.now(UTC)


# Twilio status callbacks -------------------------------------------------------------------------------


def twilio_settings(database_url: str, **overrides: Any) -> Settings:
    return daemon_settings(
        database_url,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        **overrides,
    )


async def _add_sent_delivery(engine: AsyncEngine, provider_id: str) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            deliveries.insert().values(
                id=uuid4(), dedupe_key=f"test:{provider_id}", booking_id=uuid4(), booking_reference="FE-00001",
                kind="booking_reminder", recipient_role="client", channel="whatsapp", address="+61412345678",
                body_text="hello", status="sent", attempts=1, provider_message_id=provider_id,
                created_at=now, updated_at=now, sent_at=now,
            )
        )  # fmt: skip


def callback_form(sid: str, status: str, error_code: str | None = None) -> dict[str, str]:
    form = {
        "AccountSid": TWILIO_ACCOUNT_SID,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "whatsapp:+61412345678",
        "From": f"whatsapp:{TWILIO_WHATSAPP_NUMBER}",
        "ApiVersion": "2010-04-01",
        "ChannelPrefix": "whatsapp",
    }
    if error_code:
        form["ErrorCode"] = error_code
    return form


async def test_status_callbacks_signed_by_twilio_are_recorded(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    sid = "SM" + "0" * 32
    await _add_sent_delivery(engine, sid)
    validator = RequestValidator(TWILIO_AUTH_TOKEN)
    failed = callback_form(sid, "failed", "63016")
    unknown = callback_form("SM" + "9" * 32, "delivered")
    async with started(twilio_settings(database_url, twilio_status_callback_url=CALLBACK_URL)) as running:
        endpoint = f"{running.url}/api/twilio/status"
        for form in (failed, unknown):
            signature = validator.compute_signature(CALLBACK_URL, form)
            async with http.post(endpoint, data=form, headers={"X-Twilio-Signature": signature}) as response:
                assert response.status == 204
        families = await scrape(http, running)
    (row,) = await fetch(engine, "SELECT provider_status, provider_error_code FROM flavor_scheduler.deliveries")
    assert tuple(row) == ("failed", "63016")
    status = "flavor_scheduler_message_status_total"
    assert value(families, "flavor_scheduler_message_status", status, channel="whatsapp", status="failed") == 1
    assert value(families, "flavor_scheduler_message_status", status, channel="whatsapp", status="delivered") == 1
    assert [entry["provider_id"] for entry in running.events("message_status_unknown_message")] == [
        unknown["MessageSid"]
    ]


@pytest.mark.parametrize(
    ("arrivals", "final", "news"),
    [
        # Twilio posts its callbacks concurrently: they may arrive out of order, and be replayed.
        ((("failed", "63016"), ("sent", None)), ("failed", "63016"), 1),  # final, its error code kept
        ((("read", None), ("delivered", None)), ("read", None), 1),  # a later stage is never overwritten
        ((("sent", None), ("delivered", None), ("delivered", None)), ("delivered", None), 2),  # a replay
    ],
)
async def test_status_callbacks_only_ever_move_a_message_forward(
    database_url: str,
    http: aiohttp.ClientSession,
    engine: AsyncEngine,
    arrivals: tuple[tuple[str, str | None], ...],
    final: tuple[str, str | None],
    news: int,
) -> None:
    sid = "SM" + "1" * 32
    await _add_sent_delivery(engine, sid)
    validator = RequestValidator(TWILIO_AUTH_TOKEN)
    async with started(twilio_settings(database_url, twilio_status_callback_url=CALLBACK_URL)) as running:
        for status, code in arrivals:
            form = callback_form(sid, status, code) if code else callback_form(sid, status)
            signature = validator.compute_signature(CALLBACK_URL, form)
            endpoint = f"{running.url}/api/twilio/status"
            async with http.post(endpoint, data=form, headers={"X-Twilio-Signature": signature}) as response:
                assert response.status == 204  # a stale or repeated report is still a genuine one
        recorded = len(running.events("message_status"))
        superseded = len(running.events("message_status_superseded"))
        families = await scrape(http, running)
    (row,) = await fetch(engine, "SELECT provider_status, provider_error_code FROM flavor_scheduler.deliveries")
    assert tuple(row) == final
    assert (recorded, superseded) == (news, len(arrivals) - news)
    counted = sum(
        value(families, "flavor_scheduler_message_status", "flavor_scheduler_message_status_total",
              channel="whatsapp", status=status) or 0
        for status in {status for status, _ in arrivals}
    )  # fmt: skip
    assert counted == news  # only news is counted


async def test_status_callbacks_with_a_forged_signature_are_refused(
    database_url: str, http: aiohttp.ClientSession, engine: AsyncEngine
) -> None:
    sid = "SM" + "1" * 32
    await _add_sent_delivery(engine, sid)
    genuine = callback_form(sid, "delivered")
    good_signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, genuine)
    forgeries = [
        (genuine, {}),  # unsigned
        (genuine, {"X-Twilio-Signature": RequestValidator("another-token").compute_signature(CALLBACK_URL, genuine)}),
        (
            genuine,
            {
                "X-Twilio-Signature": RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
                    "https://evil.example.com/x", genuine
                )
            },
        ),
        ({**genuine, "MessageStatus": "read"}, {"X-Twilio-Signature": good_signature}),  # tampered
    ]
    async with started(twilio_settings(database_url, twilio_status_callback_url=CALLBACK_URL)) as running:
        for form, headers in forgeries:
            async with http.post(f"{running.url}/api/twilio/status", data=form, headers=headers) as response:
                assert response.status == 403
    assert await scalar(engine, "SELECT provider_status FROM flavor_scheduler.deliveries") is None


async def test_status_callbacks_answer_404_without_a_callback_url(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    form = callback_form("SM" + "2" * 32, "delivered")
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, form)
    async with (
        started(twilio_settings(database_url)) as running,
        http.post(f"{running.url}/api/twilio/status", data=form, headers={"X-Twilio-Signature": signature}) as response,
    ):
        assert response.status == 404


# Failed fires run again (CONTRACT §5) --------------------------------------------------------------

QUICK_RETRIES = Limits(fire_retry_first_seconds=0.2, fire_retry_max_seconds=1.0)


async def _fire_runs(engine: AsyncEngine, job: JobName) -> list[Any]:
    return await fetch(
        engine,
        "SELECT slot, trigger, status, attempt FROM flavor_scheduler.job_runs WHERE job_name = :job",
        job=job.value,
    )


async def test_a_fire_whose_run_ended_in_error_runs_again_once_it_can(database_url: str, engine: AsyncEngine) -> None:
    """The nightly purge fails (a trigger on the table raises, as a database in trouble would);
    the same fire runs again after a short backoff, under the same run-history row, and succeeds
    once the trouble is gone; no second row, no run of the next fire. Every attempt has its one
    `job_finished` line (a failed one at error level); the fire's failures count as one failed
    run, which is what JobFailing pages on (CONTRACT §7)."""
    job = JobName.CLEANUP_OLD_NOTIFICATIONS
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'storage trouble'; END $$"
            )
        )
        await conn.execute(text("CREATE TRIGGER trouble BEFORE DELETE ON notifications EXECUTE FUNCTION refuse()"))
    await add_notification(engine, is_read=True, created_at=datetime.now(UTC) - timedelta(days=40))
    async with started(daemon_settings(database_url), limits=QUICK_RETRIES) as running:
        await fire_now(running, job)

        def failed_twice() -> bool:  # the fire, and its retry that failed again
            return len(running.events("fire_retry_scheduled")) >= 2

        await wait_until(failed_twice, within=10, what="the fire's run and its retry to fail")
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER trouble ON notifications"))

        async def succeeded() -> bool:
            return any(row.status == "success" for row in await _fire_runs(engine, job))

        await wait_until(succeeded, within=10, what="the fire to run again and succeed")
        await running.app.inflight.idle()
        scheduled = running.events("fire_retry_scheduled")
        finished = running.events("job_finished")  # the only job that runs here
        registry = running.app.registry
    (row,) = await _fire_runs(engine, job)  # one fire, one row: its attempts counted
    assert (row.trigger, row.status) == ("retry", "success")
    assert row.attempt == len(scheduled) + 1 >= 3
    assert scheduled[0]["slot"] == row.slot
    assert await scalar(engine, "SELECT count(*) FROM notifications") == 0
    assert [(entry["outcome"], entry["log_level"]) for entry in finished] == [("error", "error")] * len(scheduled) + [
        ("success", "info")
    ]
    runs_total = "flavor_scheduler_job_runs_total"
    assert registry.get_sample_value(runs_total, {"job_name": job.value, "outcome": "error"}) == 1
    assert registry.get_sample_value(runs_total, {"job_name": job.value, "outcome": "success"}) == 1


async def test_a_fire_that_could_not_reach_the_database_runs_once_it_answers(
    database_url: str, engine: AsyncEngine, test_databases: test_database.DatabaseFactory
) -> None:
    """A short outage at a daily fire time: the fire cannot even be claimed; it runs once the
    database answers again (the next retry), instead of waiting for tomorrow."""
    job = JobName.CLEANUP_EXPIRED_OTPS
    name = make_url(database_url).database
    async with started(daemon_settings(database_url), limits=QUICK_RETRIES) as running:
        await _allow_connections(test_databases, name, allowed=False)
        try:
            await running.app.db.dispose()  # no pooled connection survives the outage either
            await fire_now(running, job)
            await wait_until(
                lambda: bool(running.events("fire_retry_scheduled")), within=10, what="the fire to fail and be retried"
            )
        finally:
            await _allow_connections(test_databases, name, allowed=True)

        async def ran() -> bool:
            return any(row.status == "success" for row in await _fire_runs(engine, job))

        await wait_until(ran, within=15, what="the fire to run once the database answers")
        await running.app.inflight.idle()
        failed = running.events("job_failed")
        scheduled = running.events("fire_retry_scheduled")
        finished = running.events("job_finished")  # the only job that runs here
        registry = running.app.registry
    assert failed and failed[0]["reason"] == "database_unreachable"
    (row,) = await _fire_runs(engine, job)
    assert (row.trigger, row.status) == ("retry", "success")  # the fire's one row, written by its retry
    # Each attempt that could not start ends with its job_finished too, at error level, saying why.
    assert [(entry["outcome"], entry.get("reason"), entry["log_level"]) for entry in finished] == [
        ("error", "database_unreachable", "error")
    ] * len(scheduled) + [("success", None, "info")]
    runs_total = "flavor_scheduler_job_runs_total"
    assert registry.get_sample_value(runs_total, {"job_name": job.value, "outcome": "error"}) == 1
