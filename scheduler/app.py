"""The composition root: build(settings) wires engine, transports, metrics and runner together,
and owns the order of start-up and shutdown."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, replace
from typing import TextIO
from uuid import uuid4

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler import __version__
from scheduler.clock import Clock, SystemClock
from scheduler.db import migrate
from scheduler.db import runs as runs_db
from scheduler.db.engine import create_engine
from scheduler.db.platform import PlatformTables, inspect_platform
from scheduler.metrics import Metrics
from scheduler.notify.content import Renderer
from scheduler.notify.dispatcher import Dispatcher
from scheduler.notify.message import Channel, MessageKind
from scheduler.notify.outbox import MessagePlanner
from scheduler.notify.transport import Transport
from scheduler.runner import Dependencies, Runner
from scheduler.settings import Settings

log = structlog.get_logger(__name__)


def replica_name() -> str:
    """host:pid:random — unique per process, readable in the run history."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


def build_transports(
    settings: Settings, metrics: Metrics, *, demo: bool, console: TextIO | None = None
) -> dict[Channel, Transport]:
    """The enabled channels' transports: console ones in the demo, else those with credentials."""
    if demo:
        from scheduler.notify.console import ConsoleTransport

        return {channel: ConsoleTransport(channel, console or sys.stderr) for channel in Channel}
    transports: dict[Channel, Transport] = {}
    if settings.whatsapp_enabled:
        from scheduler.notify.twilio import TwilioTransport

        transports[Channel.WHATSAPP] = TwilioTransport(settings, on_request=metrics.observe_provider_request)
    if settings.email_enabled:
        from scheduler.notify.resend import ResendTransport

        transports[Channel.EMAIL] = ResendTransport(settings, on_request=metrics.observe_provider_request)
    return transports


@dataclass
class App:
    """Everything the daemon and the CLI use, built once from the settings."""

    settings: Settings
    engine: AsyncEngine
    clock: Clock
    metrics: Metrics
    registry: CollectorRegistry
    transports: dict[Channel, Transport]
    replica_id: str
    runner: Runner
    dispatcher: Dispatcher
    ready: bool = False
    stopping: bool = False

    @property
    def tables(self) -> PlatformTables:
        return self.runner.deps.tables

    async def prepare_database(self) -> None:
        """Migrate our schema, check the platform's tables, seed the last-success gauges."""
        await migrate.upgrade(self.engine)
        async with self.engine.begin() as conn:
            self.runner.deps = replace(self.runner.deps, tables=await inspect_platform(conn))
            await runs_db.ensure_installed(conn, now=self.clock.now())
            successes = await runs_db.last_successes(conn)
        for job_name, finished in successes.items():
            if finished is not None:
                self.metrics.job_last_success.labels(job_name=job_name).set(finished.timestamp())
        missing = [
            name for name in ("otp_codes", "audit_logs", "notification_preferences") if not self.tables.has(name)
        ]
        if missing:
            log.warning("optional_tables_missing", tables=missing, effect="jobs needing them skip with a warning")
        self.ready = True
        self.metrics.set_ready(True)

    async def aclose(self) -> None:
        """Close transports, then the engine (the shutdown order's last steps)."""
        for transport in self.transports.values():
            try:
                await transport.aclose()
            except Exception:
                log.warning("transport_close_failed", provider=transport.provider)
        await self.engine.dispose()


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transports: dict[Channel, Transport] | None = None,
    registry: CollectorRegistry | None = None,
    demo: bool = False,
) -> App:
    """Wire the application; connects to nothing yet (see App.prepare_database)."""
    url = settings.async_database_url()
    if url is None:
        raise ValueError("DATABASE_URL is not set")
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry, __version__)
    if transports is None:
        transports = build_transports(settings, metrics, demo=demo)
    for channel in Channel:
        if channel not in transports:
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
    clock = clock or SystemClock()
    engine = create_engine(url, pool_size=settings.database_pool_size)
    replica_id = replica_name()
    planner = MessagePlanner(
        Renderer(settings.tz),
        enabled_channels=transports.keys(),
        content_sids={kind: settings.content_sid(kind.value) for kind in MessageKind},
    )
    dispatcher = Dispatcher(
        engine,
        transports,
        limits={Channel.WHATSAPP: settings.whatsapp_max_per_second, Channel.EMAIL: settings.email_max_per_second},
        clock=clock,
        metrics=metrics,
        claimer=replica_id,
    )
    deps = Dependencies(
        settings=settings,
        engine=engine,
        tables=PlatformTables.everything(),
        metrics=metrics,
        planner=planner,
        dispatcher=dispatcher,
        clock=clock,
        replica_id=replica_id,
    )
    app = App(
        settings=settings,
        engine=engine,
        clock=clock,
        metrics=metrics,
        registry=registry,
        transports=transports,
        replica_id=replica_id,
        runner=Runner(deps),
        dispatcher=dispatcher,
    )
    app.runner.should_stop = lambda: app.stopping
    return app
