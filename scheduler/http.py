"""The daemon's HTTP side (CONTRACT §6): /metrics, /healthz, /readyz, the platform's old cron
routes as authenticated triggers, and Twilio's message-status callbacks.

It runs nothing itself: a trigger goes to the runs in flight, which know what is running here.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.clock import Clock
from scheduler.db import migrate
from scheduler.db.database import Database
from scheduler.db.errors import DatabaseError
from scheduler.http_guard import Guard
from scheduler.http_resend import ResendWebhook
from scheduler.http_twilio import TwilioCallbacks
from scheduler.inflight import RunsInFlight
from scheduler.jobs.report import group_json
from scheduler.lifecycle import Lifecycle
from scheduler.limits import ConnectionLimits
from scheduler.metrics import Metrics
from scheduler.redact import redact_text
from scheduler.settings import Settings
from scheduler.vocabulary import SkipReason, Trigger

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a Twilio callback is under 2 KiB, a Resend event a few; the triggers take no body
READY_PROBE_TIMEOUT_SECONDS = 2.0  # a probe must answer in time even when the database hangs
SHUTDOWN_GRACE_SECONDS = 1.0  # open requests at stop; runs are drained before the server stops
TRIGGER_GROUPS = ("cleanup", "reminders")  # the old Vercel routes: /api/cron/cleanup, /api/cron/reminders

Readiness = tuple[str | None, str | None]
"""What stops readiness (a fixed phrase, None when ready) and the driver's detail, for the log."""


@web.middleware
async def _limit_body(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse large bodies before any handler runs (reading one is also capped by client_max_size)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    return await handler(request)


class HttpServer:
    """The aiohttp application and its listening socket, guarded (http_guard: a bounded number of
    connections, each given `limits.request_timeout_seconds` to deliver its request)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry,
        lifecycle: Lifecycle,
        db: Database,
        metrics: Metrics,
        clock: Clock,
        inflight: RunsInFlight,
        limits: ConnectionLimits,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._lifecycle = lifecycle
        self._db = db
        self._metrics = metrics
        self._clock = clock
        self._inflight = inflight
        self._head_revision = migrate.head_revision()
        self._runner: web.AppRunner | None = None
        self._readiness: str | None = None  # the last problem logged (None: ready, or not asked yet)
        self._probe: asyncio.Future[Readiness] | None = None  # the readiness probe in flight
        self.port: int | None = None  # the bound port (HTTP_PORT=0 picks a free one)
        self.guard = Guard(limits, _handler_options(limits))

        web_app = web.Application(middlewares=[self.guard.middleware, _limit_body], client_max_size=MAX_BODY_BYTES)
        web_app.router.add_get("/metrics", self.metrics)
        web_app.router.add_get("/healthz", self.healthz)
        web_app.router.add_get("/readyz", self.readyz)
        for group in TRIGGER_GROUPS:
            web_app.router.add_route("GET", f"/api/cron/{group}", self.cron_trigger)
            web_app.router.add_route("POST", f"/api/cron/{group}", self.cron_trigger)
        self.twilio = TwilioCallbacks(settings, db=db, clock=clock, metrics=metrics, guard=self.guard)
        web_app.router.add_post("/api/twilio/status", self.twilio.status)
        self.resend = ResendWebhook(settings, db=db, clock=clock, metrics=metrics, guard=self.guard)
        web_app.router.add_post("/api/resend/webhook", self.resend.receive)
        self.web_app = web_app

    async def start(self) -> int:
        """Listen on HTTP_HOST:HTTP_PORT; returns the port bound."""
        settings = self.settings
        runner = web.AppRunner(
            self.web_app,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
            **_handler_options(self.guard.limits),
        )
        await runner.setup()
        if runner.server is None:  # setup() sets it
            raise RuntimeError("the HTTP runner has no server after setup()")
        try:
            self.port = await self.guard.start(runner.server, settings.http_host, settings.http_port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info(
            "http_listening",
            host=settings.http_host,
            port=self.port,
            max_connections=self.guard.limits.max_connections,
            request_timeout_seconds=self.guard.limits.request_timeout_seconds,
        )
        return self.port

    async def stop(self) -> None:
        await self.guard.stop()  # no new connection; then aiohttp finishes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Observability -----------------------------------------------------------

    async def metrics(self, _request: web.Request) -> web.Response:
        # The ready gauge is what the last probe found (a database lost while running shows too);
        # each scrape starts the next one and never waits for it: a slow database or a busy pool
        # must not make the scrape itself fail.
        self._probe_started()
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _request: web.Request) -> web.Response:
        problem = self._lifecycle.liveness_problem()
        if problem is not None:
            return web.json_response({"status": "unhealthy", "problem": problem}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """`ready` or `not ready`, and nothing else: whoever can reach the port learns nothing about
        the database (CONTRACT §6). Why it is not ready goes to the log, once per change."""
        problem, detail = await self._readiness_problem()
        if problem != self._readiness:
            if problem is None:
                log.info("readiness_changed", ready=True)
            else:
                log.warning("readiness_changed", ready=False, problem=problem, error=detail)
            self._readiness = problem
        if problem is not None:
            return web.json_response({"status": "not ready"}, status=503)
        return web.json_response({"status": "ready"})

    async def _readiness_problem(self) -> Readiness:
        """What /readyz answers, the probe's finding also setting the ready gauge."""
        return await asyncio.shield(self._probe_started())  # one caller going away cancels no one's

    def _probe_started(self) -> asyncio.Future[Readiness]:
        """The readiness probe in flight, or a new one. Requests that come while one is in flight
        share it: a flood of probes or scrapes costs the database one query, not one each."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_readiness())
            self._probe.add_done_callback(self._record_readiness)
        return self._probe

    def _record_readiness(self, probe: asyncio.Future[Readiness]) -> None:
        found_ready = not probe.cancelled() and probe.exception() is None and probe.result()[0] is None
        ready = found_ready and self._lifecycle.ready  # a probe that outlived the start of a stop is old news
        self._metrics.set_ready(ready)

    async def _probe_readiness(self) -> Readiness:
        """What stops readiness (a fixed phrase, None when ready) and the driver's detail, for the log."""
        if self._lifecycle.stopping:
            return "stopping", None
        if not self._lifecycle.ready:
            return "starting: waiting for the database", None
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT_SECONDS):
                revision = await migrate.current_revision(self._db)
        except TimeoutError:
            return f"database did not answer within {READY_PROBE_TIMEOUT_SECONDS:g} s", None
        except DatabaseError as exc:
            return "database unreachable", redact_text(str(exc), self.settings.secret_values())
        if revision != self._head_revision:
            return "schema not migrated", f"schema at revision {revision}, expected {self._head_revision}"
        return None, None

    # The cron triggers ---------------------------------------------------------

    async def cron_trigger(self, request: web.Request) -> web.Response:
        """Run a group now, as the platform's old cron route did, and answer its result JSON."""
        group = request.path.rsplit("/", 1)[-1]
        secret = self.settings.cron_secret
        if secret is None:
            raise web.HTTPNotFound
        if not _bearer_matches(request.headers.get("Authorization", ""), secret.get_secret_value()):
            log.warning("cron_trigger_unauthorised", group=group, remote=request.remote)
            return web.json_response(
                {"success": False, "error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        if not self._lifecycle.ready:
            state = "stopping" if self._lifecycle.stopping else "starting"
            return web.json_response({"success": False, "error": f"the daemon is {state}"}, status=503)
        started = self._clock.now()
        log.info("cron_trigger", group=group)
        results = await self._inflight.run_group(group, Trigger.HTTP)
        if results is None:
            return web.json_response({"success": False, "error": f"{group} is already running"}, status=409)
        secrets = self.settings.secret_values()
        for result in results:
            result.errors = [redact_text(error, secrets) for error in result.errors]
        body = group_json(group, results, started)
        if any(result.skipped == SkipReason.ALREADY_RUNNING for result in results):
            return web.json_response(body, status=409)  # another replica holds one of its jobs
        return web.json_response(body, status=200 if body["success"] else 500)


def _handler_options(limits: ConnectionLimits) -> dict[str, Any]:
    """aiohttp's per-connection options, the same for the runner and the guard's handlers."""
    # The guard's deadline closes idle and kept-alive connections; aiohttp's keep-alive timer
    # (an hour by default) stays behind it. Lingering over an unread body is bounded like a request.
    return {"access_log": None, "lingering_time": limits.request_timeout_seconds}


def _bearer_matches(header: str, secret: str) -> bool:
    """`Authorization: Bearer <secret>`, compared in constant time."""
    scheme, _, token = header.partition(" ")
    # aiohttp hands non-UTF-8 header bytes over as surrogate escapes: encode them back, never fail.
    presented = token.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, secret.encode())
