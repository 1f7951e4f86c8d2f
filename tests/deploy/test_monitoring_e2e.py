"""The shipped monitoring, end to end: two real daemons (`python -m scheduler`) on a real database,
a real Prometheus loaded with deploy/prometheus/prometheus.yml (adapted: local targets, 1-second
intervals) and a copy of alerts.yml whose `for:` are shortened, a real Alertmanager with
deploy/alertmanager/alertmanager.yml. Faults are induced for real: the database unreachable at
start and cut while running (through a TCP proxy), a run whose database connection dies, Twilio
answering 503 and Resend 422 (stand-in servers), a replica stopped. Alertmanager's API must show
the right alerts, and Prometheus must have fired no other; every dashboard query must return
data, and each bar panel must add up to the true count.

Nothing here is awaited on an event: the daemons and the tools are other processes, so each step
polls their HTTP APIs with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from scheduler.db import suppressions as suppressions_db
from scheduler.db.suppressions import NewSuppression
from scheduler.settings import Settings
from scheduler.vocabulary import AddressKind, JobName, SuppressionReason
from tests.acceptance.daemons import DaemonProcess, bearer, daemon_env, daemons, eventually, stop_gracefully
from tests.deploy.monitoring import (
    Labels,
    Tool,
    active_alerts,
    alert,
    alertmanager,
    dashboard_panels,
    identity,
    prometheus,
    query,
    seconds,
    substitute,
    values,
)
from tests.factories import add_booking, add_notification, scalar
from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeResend, FakeTwilio, Reply
from tests.faults.network import BlackholeProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WAIT = "3s"  # every `for:` of the rules' copy: long enough that a blip of one scrape never fires
ENVIRONMENT = "local"  # the label prometheus.yml gives the daemon's targets
ALERT_SECONDS = 30.0  # a condition reaching Alertmanager: scrapes, `for:`, evaluation, sending
JOB_FAILING_SECONDS = 100.0  # JobFailing counts failed runs minute by minute: up to a minute more
DUE_BOOKINGS = 8  # 24 WhatsApp messages (23 left pending: >= 20) and 24 emails (failed: >= 10)
STALE_BOOKINGS = 3
OLD_READ_NOTIFICATIONS = 3
CALLBACK_URL = "https://scheduler.example.com/api/twilio/status"
STEP_SECONDS = 5  # the dashboard's $__interval here: a bar every 5 s


@dataclass
class Stack:
    """What the scenario drives and watches."""

    http: aiohttp.ClientSession
    alertmanager: Tool
    prometheus: Tool
    seen: set[Labels] = field(default_factory=set)  # every alert Alertmanager showed

    async def alerts(self) -> dict[Labels, dict[str, Any]]:
        found = await active_alerts(self.http, self.alertmanager.url)
        self.seen.update(found)
        return found

    async def firing(self, expected: Labels, *, within: float = ALERT_SECONDS) -> dict[str, Any]:
        """Wait for Alertmanager to show the alert; returns it."""

        async def shown() -> dict[str, Any] | None:
            return (await self.alerts()).get(expected)

        return await eventually(shown, within=within, what=f"{dict(expected)} in Alertmanager")

    async def resolved(self, expected: Labels) -> None:
        async def gone() -> bool | None:
            return True if expected not in await self.alerts() else None

        await eventually(gone, within=ALERT_SECONDS, what=f"{dict(expected)} to resolve")

    async def query(self, expr: str, **params: float | str) -> list[dict[str, Any]]:
        return await query(self.http, self.prometheus.url, expr, **params)

    async def watch(self) -> None:
        """Poll Alertmanager all along, so that no alert passes unseen between the steps."""
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                await self.alerts()
            await asyncio.sleep(0.25)


def target(daemon: DaemonProcess) -> str:
    """The daemon's scrape target, which is its `instance` label."""
    return daemon.url.removeprefix("http://")


def scheduler_env(database_url: str, twilio: FakeTwilio, resend: FakeResend) -> dict[str, str]:
    """Both channels on the stand-ins, every schedule quiet (the test triggers the runs)."""
    settings = {
        "twilio_account_sid": TWILIO_ACCOUNT_SID,
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "twilio_whatsapp_number": TWILIO_WHATSAPP_NUMBER,
        "twilio_api_base_url": twilio.url,
        "twilio_status_callback_url": CALLBACK_URL,
        "resend_api_key": RESEND_API_KEY,
        "resend_api_url": resend.url,
        "whatsapp_max_per_second": "50",
        "email_max_per_second": "50",
        # One email a request: the refusals are scripted for POST /emails (script(route="send")).
        "email_batch_size": "1",
    }
    if "quiet_hours" in Settings.model_fields:  # held messages would raise no message alert at night
        settings["quiet_hours"] = "off"
    return daemon_env(database_url, **settings)


async def seed(engine: AsyncEngine) -> None:
    """Bookings due for both reminders, stale bookings, old read notifications; no otp_codes table
    (cleanup_expired_otps then skips, so the skipped-runs panel has something to show)."""
    now = datetime.now(UTC)
    for _ in range(DUE_BOOKINGS):
        await add_booking(engine, event_date=now + timedelta(hours=10))
    for _ in range(STALE_BOOKINGS):
        await add_booking(engine, status="pending", payment_status="pending", created_at=now - timedelta(hours=48))
    for _ in range(OLD_READ_NOTIFICATIONS):
        await add_notification(engine, is_read=True, created_at=now - timedelta(days=40))
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE otp_codes"))


def script_provider_failures(twilio: FakeTwilio, resend: FakeResend) -> None:
    """Twilio takes one message, then answers 503 (retry in an hour); Resend refuses every email."""
    unavailable = Reply.twilio_error(503, 20503, "Service Unavailable", headers={"Retry-After": "3600"})
    twilio.script(Reply(accept=True), *[unavailable] * 200)
    resend.script(*[Reply.resend_error(422, "validation_error", "Invalid `to` field")] * 200)


@contextlib.asynccontextmanager
async def stack(workdir: Path, scheduler_targets: list[str]) -> AsyncIterator[Stack]:
    """Alertmanager, then Prometheus sending to it, both ready; Alertmanager watched throughout."""
    async with aiohttp.ClientSession() as http:
        with alertmanager(workdir) as am:
            await am.wait_ready(http)
            async with prometheus(
                http, workdir, scheduler_targets=scheduler_targets, alertmanager_url=am.url, wait=WAIT
            ) as prom:
                running = Stack(http, am, prom)
                watcher = asyncio.create_task(running.watch(), name="watch-alertmanager")
                try:
                    yield running
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher


async def fail_a_cleanup_run(http: aiohttp.ClientSession, daemon: DaemonProcess, engine: AsyncEngine) -> None:
    """A cleanup run whose database connection dies under it: the stale-booking cancel waits on a
    table lock this test holds, and its backend is terminated. The run ends in error; the rest of
    the group runs on."""
    database = make_url(engine.url).database
    lock = await engine.connect()
    trigger = None
    try:
        await lock.execute(text("LOCK TABLE bookings IN SHARE MODE"))
        trigger = asyncio.create_task(http.post(f"{daemon.url}/api/cron/cleanup", headers=bearer()))

        async def blocked() -> int | None:
            pid = await scalar(
                engine,
                "SELECT pid FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()",
                db=database,
            )
            return int(pid) if pid is not None else None

        pid = await eventually(blocked, within=20, what="the stale-booking cancel to wait on the lock")
        assert await scalar(engine, "SELECT pg_terminate_backend(:pid)", pid=pid)
    except BaseException:
        if trigger is not None:
            trigger.cancel()
        raise
    finally:
        await lock.rollback()
        await lock.close()
    async with await trigger as response:
        assert response.status == 500  # the group reports its failed job
        assert (await response.json())["success"] is False


async def post_status_callback(http: aiohttp.ClientSession, daemon: DaemonProcess, sid: str) -> None:
    """Twilio's signed callback for the one message it took: delivered."""
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": TWILIO_ACCOUNT_SID}
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, form)
    async with http.post(
        f"{daemon.url}/api/twilio/status", data=form, headers={"X-Twilio-Signature": signature}
    ) as response:
        assert response.status == 204, await response.text()


async def test_the_shipped_alerts_fire_for_the_right_reasons_and_the_dashboard_shows_them(
    database_url: str, engine: AsyncEngine, tmp_path: Path, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    started = time.time()
    await seed(engine)
    script_provider_failures(twilio_server, resend_server)
    async with BlackholeProxy(database_url) as proxy:
        proxy.cut()  # replica a's database is not reachable yet
        with (
            daemons(1, scheduler_env(proxy.url(), twilio_server, resend_server), tmp_path, prefix="a") as (a,),
            daemons(1, scheduler_env(database_url, twilio_server, resend_server), tmp_path, prefix="b") as (b,),
        ):
            await a.wait_listening()
            await b.wait_ready()
            async with stack(tmp_path, [target(a), target(b)]) as watched:
                http = watched.http
                await database_unreachable_at_start(watched, proxy, a)
                await fail_a_cleanup_run(http, b, engine)
                await provider_failures(watched, a, twilio_server, engine)
                await database_cut_while_running(watched, proxy, a)
                await job_failing_once(watched, b, (twilio_server, resend_server))
                scraped = await every_run_scraped(watched, engine)  # before b stops, or its last runs go uncounted
                await stop_gracefully(b)
                await watched.firing(alert("FlavorSchedulerDown", severity="critical", instance=target(b)))
                await the_dashboard_shows_it_all(watched, engine, started, scraped)
                await only_the_induced_alerts_fired(watched, a, b, started)
            await stop_gracefully(a)
    print(f"monitoring end to end: {time.time() - started:.1f} s")


async def database_unreachable_at_start(watched: Stack, proxy: BlackholeProxy, a: DaemonProcess) -> None:
    """A replica up but without its database: NotReady (a warning: b runs the jobs), its next runs
    known from the schedule; then the database answers and it clears."""
    not_ready = alert("FlavorSchedulerNotReady", severity="warning", instance=target(a))
    await watched.firing(not_ready)
    (ready,) = values(await watched.query(f'flavor_scheduler_ready{{instance="{target(a)}"}}'))
    assert ready == 0
    next_runs = values(
        await watched.query(f'flavor_scheduler_job_next_run_timestamp_seconds{{instance="{target(a)}"}}')
    )
    assert len(next_runs) == len(JobName) and min(next_runs) > time.time(), next_runs
    proxy.restore()
    await a.wait_ready()
    await watched.resolved(not_ready)


async def provider_failures(watched: Stack, a: DaemonProcess, twilio: FakeTwilio, engine: AsyncEngine) -> None:
    """The reminder run meets Twilio's 503 (messages left pending) and Resend's 422 (emails failed):
    the backlog and the failure ratio alert, per channel. Twilio reports the one message it took.
    One client's address bounced earlier: that email is skipped (the suppression panel)."""
    bounced = await scalar(engine, "SELECT email FROM clients ORDER BY email LIMIT 1")
    async with engine.begin() as conn:
        earlier = NewSuppression(bounced, AddressKind.EMAIL, SuppressionReason.BOUNCED, source="resend webhook")
        assert await suppressions_db.suppress(conn, [earlier], now=datetime.now(UTC)) == 1
    async with watched.http.post(f"{a.url}/api/cron/reminders", headers=bearer()) as response:
        assert response.status in (200, 500), await response.text()
    (taken,) = twilio.accepted
    await post_status_callback(watched.http, a, taken.sid)
    await watched.firing(alert("FlavorSchedulerMessagesFailing", severity="critical", channel="email"))
    await watched.firing(alert("FlavorSchedulerBacklogGrowing", severity="warning", channel="whatsapp"))


async def database_cut_while_running(watched: Stack, proxy: BlackholeProxy, a: DaemonProcess) -> None:
    """Replica a loses its database (every connection closed, new ones turned away): /readyz and
    the ready gauge say so, NotReady fires; the database comes back and it clears."""
    proxy.cut()
    not_ready = alert("FlavorSchedulerNotReady", severity="warning", instance=target(a))
    await watched.firing(not_ready)
    async with watched.http.get(f"{a.url}/readyz") as response:
        assert response.status == 503
    proxy.restore()
    await watched.resolved(not_ready)


async def job_failing_once(watched: Stack, b: DaemonProcess, providers: tuple[FakeTwilio, FakeResend]) -> None:
    """The failed cleanup run pages once, counted once with two replicas; a successful run clears
    it (the providers take its cancellation notices)."""
    failing = alert("FlavorSchedulerJobFailing", severity="warning", job_name="cleanup_stale_bookings")
    shown = await watched.firing(failing, within=JOB_FAILING_SECONDS)
    assert "ended in error 1 time in the last 25h" in shown["annotations"]["description"], shown
    # The run history says so too: its last run failed, with no success since.
    last_failed = alert("FlavorSchedulerLastRunFailed", severity="warning", job_name="cleanup_stale_bookings")
    await watched.firing(last_failed)
    for provider in providers:
        provider.unscript()
    async with watched.http.post(f"{b.url}/api/cron/cleanup", headers=bearer()) as response:
        assert response.status == 200, await response.text()
    await watched.resolved(failing)
    await watched.resolved(last_failed)


async def every_run_scraped(watched: Stack, engine: AsyncEngine) -> float:
    """Prometheus has scraped every run the history holds (a replica stopped right after a run
    takes its last increments with it: Prometheus never saw them, and no dashboard can); returns
    when it had (time.time())."""

    async def caught_up() -> bool | None:
        runs = await scalar(engine, "SELECT count(*) FROM flavor_scheduler.job_runs")
        counted = values(await watched.query("sum(flavor_scheduler_job_runs_total)"))
        return True if counted == [runs] else None

    await eventually(caught_up, within=ALERT_SECONDS, what="Prometheus to count every run of the history")
    return time.time()


async def the_dashboard_shows_it_all(watched: Stack, engine: AsyncEngine, started: float, scraped: float) -> None:
    """Every query of every panel returns data (as Grafana would ask it: variables substituted,
    environment chosen, every instance and job); each bar panel adds up to the true count.

    The last bar is the first whose time is past the moment Prometheus had every run: the last
    runs' increments (the bookings cancelled among them) may have been scraped a moment after a
    bar's time, and the bar that holds them must be complete. Its time is at most one step away:
    waited for as wall-clock time, the only thing a range query's steps follow."""
    end = started + STEP_SECONDS * math.ceil((scraped - started) / STEP_SECONDS)  # the last bar's time
    await asyncio.sleep(max(0.0, end - time.time()))
    variables = {
        "environment": ENVIRONMENT,
        "instance": ".*",
        "job_name": ".*",
        "__interval": f"{STEP_SECONDS}s",
        "__rate_interval": f"{4 * STEP_SECONDS}s",
        "__range": seconds(started),
    }
    window = {"start": started, "end": end, "step": STEP_SECONDS}
    for panel in dashboard_panels():
        for target_ in panel.targets:
            expr = substitute(target_["expr"], variables)
            result = await watched.query(expr, **({"time": end} if target_.get("instant") else window))
            assert result, f"panel {panel.title!r} shows no data: {expr}"
            if panel.bars:
                await assert_bars_add_up(watched, panel.title, expr, result, end=end, started=started)
    # The runs the bars can show: those that ended by the last bar's time.
    runs = await scalar(
        engine, "SELECT count(*) FROM flavor_scheduler.job_runs WHERE finished_at <= to_timestamp(:end)", end=end
    )
    (bars,) = [p for p in dashboard_panels() if p.title == "Job runs by outcome"]
    expr = substitute(bars.targets[0]["expr"], variables)
    assert sum(values(await watched.query(expr, **window))) == runs
    (cancelled,) = [p for p in dashboard_panels() if p.title == "Bookings cancelled"]
    expr = substitute(cancelled.targets[0]["expr"], variables)
    assert sum(values(await watched.query(expr, **window))) == STALE_BOOKINGS


async def assert_bars_add_up(
    watched: Stack, title: str, expr: str, result: list[dict[str, Any]], *, end: float, started: float
) -> None:
    """Each series' bars add up to what its counters rose by over the whole range (their own samples)."""
    (selector,) = set(re.findall(r"flavor_scheduler_\w+\{[^}]*\}", expr))
    grouping = re.match(r"sum( by \([^)]*\))?", expr)
    assert grouping, expr
    since = f"{math.ceil(end - started) + STEP_SECONDS}s"
    truth = await watched.query(
        f"{grouping.group(0)} (max_over_time({selector}[{since}]) - min_over_time({selector}[{since}])) > 0", time=end
    )
    expected = {json.dumps(series["metric"], sort_keys=True): float(series["value"][1]) for series in truth}
    shown = {json.dumps(series["metric"], sort_keys=True): sum(values([series])) for series in result}
    assert shown == pytest.approx(expected), title


async def only_the_induced_alerts_fired(watched: Stack, a: DaemonProcess, b: DaemonProcess, started: float) -> None:
    """What Prometheus fired over the whole test, and what Alertmanager showed, are the induced alerts."""
    induced = {
        alert("FlavorSchedulerNotReady", severity="warning", instance=target(a)),
        alert("FlavorSchedulerMessagesFailing", severity="critical", channel="email"),
        alert("FlavorSchedulerBacklogGrowing", severity="warning", channel="whatsapp"),
        alert("FlavorSchedulerJobFailing", severity="warning", job_name="cleanup_stale_bookings"),
        alert("FlavorSchedulerLastRunFailed", severity="warning", job_name="cleanup_stale_bookings"),
        alert("FlavorSchedulerDown", severity="critical", instance=target(b)),
    }
    fired = await watched.query(f'max_over_time(ALERTS{{alertstate="firing"}}[{seconds(started)}])', time=time.time())
    assert {identity(series["metric"]) for series in fired} == induced
    await watched.alerts()
    assert watched.seen == induced
