"""Dead-man's-switch pings (HEARTBEAT_URL_<JOB>): `/start`, then the URL itself after a run that did
its work (`partial` included) or `/fail` after one that could not, against a checker that is up,
down or slow; a ping never fails or delays the run, and its URL (a token) is never logged."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.limits import Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.notify.transport import PermanentSendError
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, RunOutcome, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking
from tests.fakes.providers import unused_local_url

TOKEN = "5f1c2b7e-9d0a-4c61-8a7e-3b2f1d0c9e8a"  # a healthchecks.io check's UUID: whoever has it can ping


@dataclass
class Checker:
    """A healthchecks.io stand-in: records each ping's path; `hold` keeps every answer back."""

    paths: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    url: str = ""

    async def ping(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(text="OK")


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    found = Checker()
    web_app = web.Application()
    web_app.router.add_get("/{tail:.*}", found.ping)
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    found.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield found
    finally:
        if found.hold is not None:
            found.hold.set()
        await runner.cleanup()


async def _app(database_url: str, clock: FrozenClock, urls: dict[JobName, str], **limits: float) -> App:
    settings = Settings(
        _env_file=None,
        database_url=to_libpq(database_url),
        http_port=0,
        **{f"heartbeat_url_{job.value}": url for job, url in urls.items()},
    )
    transports = {
        Channel.WHATSAPP: RecordingTransport(Channel.WHATSAPP),
        Channel.EMAIL: RecordingTransport(Channel.EMAIL),
    }
    app = build(settings, clock=clock, transports=transports, limits=Limits(**limits))  # type: ignore[arg-type]
    await app.prepare_database()
    return app


async def test_a_successful_run_pings_start_then_the_url(
    database_url: str, clock: FrozenClock, checker: Checker
) -> None:
    app = await _app(database_url, clock, {JobName.CLEANUP_EXPIRED_OTPS: f"{checker.url}/{TOKEN}"})
    try:
        result = await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL)
        await app.heartbeats.aclose()  # waits for the pings in flight
        assert result.outcome is RunOutcome.SUCCESS
        assert checker.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]

        # Only the job whose URL is set is pinged; a dry run pings nothing.
        await app.runner.run(JobName.CLEANUP_OLD_AUDIT_LOGS, trigger=Trigger.MANUAL)
        await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL, dry_run=True)
        await app.heartbeats.aclose()
        assert checker.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]
    finally:
        await app.aclose()


async def test_a_run_that_could_not_do_its_work_pings_fail(
    database_url: str, clock: FrozenClock, checker: Checker, engine: AsyncEngine
) -> None:
    app = await _app(database_url, clock, {JobName.CLEANUP_EXPIRED_OTPS: f"{checker.url}/{TOKEN}/"})
    async with engine.begin() as conn:  # the platform changed the table under us: the delete fails
        await conn.execute(text("ALTER TABLE otp_codes RENAME COLUMN expires_at TO expiry"))
    try:
        result = await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL)
        await app.heartbeats.aclose()
        assert result.outcome is RunOutcome.ERROR
        assert checker.paths == [f"/{TOKEN}/start", f"/{TOKEN}/fail"]  # the URL's trailing slash is not doubled
    finally:
        await app.aclose()


async def test_a_partial_run_counts_as_success_with_a_warning(
    database_url: str, clock: FrozenClock, checker: Checker, engine: AsyncEngine
) -> None:
    app = await _app(database_url, clock, {JobName.SEND_BOOKING_REMINDERS: f"{checker.url}/{TOKEN}"})
    booking = await add_booking(engine, event_date=NOW + timedelta(hours=5))
    email = app.transports[Channel.EMAIL]
    assert isinstance(email, RecordingTransport)
    email.fail_to(booking["client"]["email"], PermanentSendError("refused", code="scripted"))
    try:
        with capture_logs() as logs:
            result = await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
            await app.heartbeats.aclose()
        assert result.outcome is RunOutcome.PARTIAL
        assert checker.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]
        warning = next(entry for entry in logs if entry["event"] == "heartbeat_partial_as_success")
        assert warning["log_level"] == "warning" and TOKEN not in str(warning)
    finally:
        await app.aclose()


async def test_a_checker_that_is_down_is_logged_and_the_run_succeeds(database_url: str, clock: FrozenClock) -> None:
    down = f"{unused_local_url()}/{TOKEN}"
    app = await _app(database_url, clock, {JobName.CLEANUP_EXPIRED_OTPS: down})
    try:
        with capture_logs() as logs:
            result = await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL)
            await app.heartbeats.aclose()
        assert result.outcome is RunOutcome.SUCCESS and result.success
        failures = [entry for entry in logs if entry["event"] == "heartbeat_failed"]
        assert len(failures) == 2  # the start and the success ping
        masked = down.removesuffix(TOKEN) + "***"  # scheme, host and port only
        assert [entry["url"] for entry in failures] == [masked, masked]
        assert TOKEN not in str(logs)
    finally:
        await app.aclose()


async def test_a_slow_checker_never_delays_the_run(database_url: str, clock: FrozenClock, checker: Checker) -> None:
    checker.hold = asyncio.Event()  # the checker accepts the connection and never answers
    app = await _app(
        database_url,
        clock,
        {JobName.CLEANUP_EXPIRED_OTPS: f"{checker.url}/{TOKEN}"},
        heartbeat_ping_timeout_seconds=60.0,
        heartbeat_ping_drain_seconds=0.2,
    )
    try:
        result = await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL)
        # The run is over, its history written, while the start ping is still unanswered.
        assert result.outcome is RunOutcome.SUCCESS
        assert checker.hold is not None and not checker.hold.is_set()
        with capture_logs() as logs:
            await app.heartbeats.aclose()  # bounded by the drain time, not by the checker
        abandoned = next(entry for entry in logs if entry["event"] == "heartbeats_abandoned")
        assert abandoned["count"] == 2  # the start, unanswered, and the success ping queued behind it
        assert checker.paths == [f"/{TOKEN}/start"]
    finally:
        await app.aclose()


async def test_a_ping_that_times_out_is_logged(database_url: str, clock: FrozenClock, checker: Checker) -> None:
    checker.hold = asyncio.Event()
    app = await _app(
        database_url,
        clock,
        {JobName.CLEANUP_EXPIRED_OTPS: f"{checker.url}/{TOKEN}"},
        heartbeat_ping_timeout_seconds=0.2,
        heartbeat_ping_drain_seconds=5.0,
    )
    try:
        with capture_logs() as logs:
            result = await app.runner.run(JobName.CLEANUP_EXPIRED_OTPS, trigger=Trigger.MANUAL)
            await app.heartbeats.aclose()
        assert result.outcome is RunOutcome.SUCCESS
        failures = [entry for entry in logs if entry["event"] == "heartbeat_failed"]
        assert [entry["error"] for entry in failures] == ["timed out", "timed out"]
        assert checker.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]  # in order, each given its time
    finally:
        await app.aclose()
