"""The composition root: `build(settings)` returns everything the process runs, fully wired
(database, transports, metrics, dispatcher, run history, runner, schedule; the HTTP server on first
use), and
`App` owns the steps of start-up and shutdown that touch them."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, TextIO
from uuid import uuid4

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler import __version__
from scheduler.clock import Clock, SystemClock
from scheduler.db import migrate
from scheduler.db.database import Database, translated_errors
from scheduler.db.engine import create_engine
from scheduler.db.platform import PlatformTables, inspect_platform
from scheduler.db.tables import OPTIONAL_TABLES
from scheduler.heartbeat_pings import HeartbeatPings
from scheduler.history import RunHistory
from scheduler.inflight import RunsInFlight
from scheduler.jobs.catalog import enabled_schedules
from scheduler.jobs.context import Dependencies
from scheduler.lifecycle import Lifecycle, Phase
from scheduler.limits import PRODUCTION, Limits
from scheduler.metrics import Metrics
from scheduler.notify.content import Renderer
from scheduler.notify.dispatcher import Dispatcher
from scheduler.notify.planner import MessagePlanner
from scheduler.notify.send_time import SendTime
from scheduler.notify.transport import Transport
from scheduler.runner import Runner
from scheduler.schedule import Schedule
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, MessageKind

if TYPE_CHECKING:
    from scheduler.http import HttpServer

log = structlog.get_logger(__name__)


def replica_name() -> str:
    """host:pid:random — unique per process, readable in the run history."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


def build_transports(
    settings: Settings, metrics: Metrics, clock: Clock, *, demo: bool, console: TextIO | None = None
) -> dict[Channel, Transport]:
    """The enabled channels' transports: console ones in the demo, else those with credentials."""
    if demo:
        from scheduler.notify.console import ConsoleTransport

        return {channel: ConsoleTransport(channel, console or sys.stderr) for channel in Channel}
    transports: dict[Channel, Transport] = {}
    from scheduler.notify.lazy import LazyTransport  # the SDKs load on the first send (memory, start time)

    if settings.whatsapp_enabled:
        transports[Channel.WHATSAPP] = LazyTransport(
            Channel.WHATSAPP, "twilio", lambda: _twilio(settings, metrics, clock)
        )
    if settings.sms_fallback_enabled:
        transports[Channel.SMS] = LazyTransport(
            Channel.SMS, "twilio", lambda: _twilio(settings, metrics, clock, Channel.SMS)
        )
    if settings.email_enabled:
        transports[Channel.EMAIL] = LazyTransport(
            Channel.EMAIL, "resend", lambda: _resend(settings, metrics, clock), batches=True
        )
    return transports


def _twilio(settings: Settings, metrics: Metrics, clock: Clock, channel: Channel = Channel.WHATSAPP) -> Transport:
    from scheduler.notify.twilio import TwilioTransport

    return TwilioTransport(settings, channel=channel, on_request=metrics.observe_provider_request, clock=clock)


def _resend(settings: Settings, metrics: Metrics, clock: Clock) -> Transport:
    from scheduler.notify.resend import ResendTransport

    return ResendTransport(settings, on_request=metrics.observe_provider_request, clock=clock)


@dataclass(eq=False)
class App:
    """Everything the daemon and the CLI use, built once from the settings."""

    settings: Settings
    clock: Clock
    limits: Limits
    db: Database
    registry: CollectorRegistry
    metrics: Metrics
    transports: dict[Channel, Transport]
    deps: Dependencies
    lifecycle: Lifecycle
    history: RunHistory
    runner: Runner
    inflight: RunsInFlight
    schedule: Schedule
    heartbeats: HeartbeatPings

    @cached_property
    def http(self) -> HttpServer:
        """The HTTP server, built when the daemon first asks: `--run-once` and the console never
        load aiohttp."""
        from scheduler.http import HttpServer

        return HttpServer(
            self.settings,
            registry=self.registry,
            lifecycle=self.lifecycle,
            db=self.db,
            metrics=self.metrics,
            clock=self.clock,
            inflight=self.inflight,
            limits=self.limits.http,
        )

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    @property
    def tables(self) -> PlatformTables:
        return self.deps.tables

    @property
    def dispatcher(self) -> Dispatcher:
        return self.deps.dispatcher

    @property
    def replica_id(self) -> str:
        return self.history.replica_id

    async def prepare_database(self) -> None:
        """Migrate our schema, check the platform's tables, seed the last-success and last-error gauges.

        Raises DatabaseError (unreachable, refused) or PlatformSchemaError (a table is missing).
        """
        await migrate.upgrade(self.db)
        async with self.db.begin() as conn:
            await inspect_platform(conn, self.tables)
        self.metrics.follow_history(await self.history.prepare())
        missing = self.tables.missing(table.name for table in OPTIONAL_TABLES)
        if missing:
            log.warning("optional_tables_missing", tables=missing, effect="jobs needing them skip with a warning")

    async def aclose(self) -> None:
        """Let the last heartbeat pings leave, close transports, then the engine (the shutdown order's last steps)."""
        await self.heartbeats.aclose()
        for transport in self.transports.values():
            try:
                await transport.aclose()
            except Exception:
                log.warning("transport_close_failed", provider=transport.provider)
        await self.db.dispose()


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transports: dict[Channel, Transport] | None = None,
    registry: CollectorRegistry | None = None,
    limits: Limits = PRODUCTION,
    schedules: Mapping[JobName, str] | None = None,
    demo: bool = False,
) -> App:
    """Wire the application; connects to nothing yet (see App.prepare_database).

    `schedules` replaces the settings' cron expressions (tests give second-level ones).
    """
    url = settings.async_database_url()
    if url is None:
        raise ValueError("DATABASE_URL is not set")
    clock = clock or SystemClock()
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry, __version__)
    if transports is None:
        transports = build_transports(settings, metrics, clock, demo=demo)
    _warn_about_channels(settings, transports, demo=demo)
    with translated_errors():
        db = Database(create_engine(url, pool_size=settings.database_pool_size))
    replica_id = replica_name()
    tables = PlatformTables()  # as if every optional table existed, until prepare_database() looks
    renderer = Renderer(settings.tz)
    dispatcher = Dispatcher(
        db,
        transports,
        ceilings={
            Channel.WHATSAPP: settings.whatsapp_max_per_second,
            Channel.SMS: settings.sms_max_per_second,
            Channel.EMAIL: settings.email_max_per_second,
        },
        limits=limits,
        clock=clock,
        metrics=metrics,
        claimer=replica_id,
        give_up_after=timedelta(hours=settings.message_max_retry_hours),
        send_time=SendTime(
            renderer,
            tz=settings.tz,
            quiet=settings.quiet,
            lead=timedelta(minutes=settings.reminder_min_lead_minutes),
            pickup=timedelta(seconds=limits.quiet_pickup_seconds),
            tables=tables,
        ),
        email_batch_size=settings.email_batch_size,
    )
    planner = MessagePlanner(
        renderer,
        enabled_channels=transports.keys(),
        content_sids={kind: settings.content_sid(kind.value) for kind in MessageKind},
    )
    deps = Dependencies(settings, db, tables, metrics, planner, dispatcher, limits)
    schedule = Schedule(schedules if schedules is not None else enabled_schedules(settings), settings.tz, clock)
    lifecycle = Lifecycle(
        clock,
        health_stale_seconds=limits.health_stale_seconds,
        scheduler_running=lambda: schedule.running,
        on_change=lambda phase: metrics.set_ready(phase is Phase.READY),
    )
    history = RunHistory(db, clock, limits, replica_id)
    heartbeats = HeartbeatPings(
        {job: url for job in JobName if (url := settings.heartbeat_url(job))},
        timeout_seconds=limits.heartbeat_ping_timeout_seconds,
        drain_seconds=limits.heartbeat_ping_drain_seconds,
    )
    runner = Runner(deps, history, lifecycle, clock, heartbeats=heartbeats)
    inflight = RunsInFlight(runner)
    return App(
        settings, clock, limits, db, registry, metrics, transports, deps, lifecycle, history, runner, inflight,
        schedule, heartbeats,
    )  # fmt: skip


def _warn_about_channels(settings: Settings, transports: Mapping[Channel, Transport], *, demo: bool) -> None:
    for channel in Channel:
        if channel not in transports and channel is not Channel.SMS:  # SMS is only ever a fallback, off by default
            log.warning(
                "channel_off", channel=channel.value, reason="no credentials; its messages are recorded as skipped"
            )
    if Channel.WHATSAPP in transports and not demo:
        without_template = [kind.value for kind in MessageKind if not settings.content_sid(kind.value)]
        if without_template:
            log.warning(
                "whatsapp_templates_missing",
                kinds=without_template,
                effect="free-text WhatsApp outside a 24-hour session fails with 63016; set TWILIO_CONTENT_SID_<KIND>",
            )
