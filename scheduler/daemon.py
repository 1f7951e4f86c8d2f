"""The long-running daemon (CONTRACT §5-§7): the order of start-up and shutdown, the signals,
and when the timers tick (heartbeat, reaper, pauses, the gauges from the shared history, backlog
gauge; what each tick does is `daemon_timers.py`). Which run may start is the run history's
business and how a run goes is the runner's; the daemon only says when.

Start: HTTP first (so /healthz answers), wait for the database, migrate and check tables, take
over abandoned runs, start the schedule, catch up, log `ready`, tell systemd.
Stop (SIGTERM/SIGINT): tell systemd, stop the schedule, let running jobs finish the item in hand
for up to SHUTDOWN_TIMEOUT_SECONDS, release what is left, stop HTTP. The CLI then closes the
transports and disposes of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import structlog

from scheduler import __version__, systemd
from scheduler.app import App
from scheduler.daemon_timers import Timers, every
from scheduler.db.errors import DatabaseError, explain_connect_error
from scheduler.db.platform import PlatformSchemaError
from scheduler.fires import FireRuns
from scheduler.jobs.catalog import GROUPS
from scheduler.lifecycle import Phase
from scheduler.records import Fire
from scheduler.vocabulary import JobName, Trigger

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1


class Daemon:
    """One daemon process. `run()` returns the exit status; `stop()` is what SIGTERM does."""

    def __init__(self, app: App, *, demo: bool = False, handle_signals: bool = True) -> None:
        self.app = app
        self.demo = demo
        self.handle_signals = handle_signals
        self._exit_code = EXIT_OK
        self._background: list[asyncio.Task[None]] = []
        self.fires = FireRuns(app)
        self._signals = 0
        self.timers = Timers(app)

    async def run(self) -> int:
        """Start, serve until stopped, shut down in order; returns the exit status."""
        app, lifecycle = self.app, self.app.lifecycle
        started = time.monotonic()
        self._install_signal_handlers()
        try:
            await app.http.start()
            lifecycle.waiting_for_database()
            self._spawn("heartbeat", every(app.limits.heartbeat_seconds, self.timers.heartbeat))
            if await self._start():
                lifecycle.become_ready()
                log.info(
                    "ready",
                    version=__version__,
                    replica=app.replica_id,
                    http_port=app.http.port,
                    timezone=app.settings.timezone,
                    next_runs={
                        job.value: at.isoformat() if at else "off" for job, at in self.timers.next_runs().items()
                    },
                    startup_seconds=round(time.monotonic() - started, 3),
                )
                systemd.notify(systemd.READY)
                # What start-up made lives as long as the process: out of the collector's sight,
                # so its full collections scan only what runs make (tens of ms, not a hundred,
                # paused between a send's grant and its request).
                gc.freeze()
                if self.demo:
                    app.inflight.run_sequence("demo:all", GROUPS["all"], Trigger.MANUAL)
                await lifecycle.reached(Phase.STOPPING)
        except Exception:
            log.exception("daemon_failed")
            self._exit_code = EXIT_FAILED
        finally:
            await self._shut_down()
            self._remove_signal_handlers()
        log.info("stopped", exit_code=self._exit_code)
        return self._exit_code

    def stop(self) -> None:
        """Begin a graceful stop: no new runs; running ones finish the item in hand."""
        if self.app.lifecycle.request_stop():
            systemd.notify(systemd.STOPPING)

    async def _start(self) -> bool:
        """Everything between `HTTP is up` and `ready`; False when start-up ended early."""
        app = self.app
        if not await self._prepare_database():
            return False
        timers = self.timers
        await timers.refresh_pauses()  # known before the first fire, the reaper and /metrics
        self._spawn("pauses", every(app.limits.pause_poll_seconds, timers.refresh_pauses, at_once=False))
        self._spawn(
            "history_gauges", every(app.limits.history_gauge_seconds, timers.refresh_history_gauges, at_once=False)
        )
        await timers.reap()  # before the catch-up: a resumed run holds its job's claim
        self._spawn("reaper", every(app.limits.reap_seconds, timers.reap, at_once=False))
        app.schedule.start(self._on_fire)
        if not self.demo:  # the demo runs every job at start anyway
            await self._catch_up()
        self._spawn("pending_gauge", every(app.limits.pending_gauge_seconds, timers.refresh_pending_gauge))
        return not app.lifecycle.stopping

    async def _prepare_database(self) -> bool:
        """Migrate and check the platform tables, waiting for the database with backoff."""
        limits = self.app.limits
        delay, attempt = limits.db_retry_first_seconds, 0
        while True:
            attempt += 1
            try:
                return await self._unless_stopped(self.app.prepare_database())
            except PlatformSchemaError as exc:
                log.error("platform_schema_error", error=str(exc))  # noqa: TRY400 - the message is the whole story
                self._exit_code = EXIT_FAILED
                return False
            except DatabaseError as exc:
                failure = explain_connect_error(exc.__cause__ or exc, self.app.settings.async_database_url() or "")
                if failure is not None and failure.fatal:  # waiting would not help: say which, exit 1
                    log.error("database_refused", problem=failure.problem.value, error=failure.message)  # noqa: TRY400 - the message is the whole story
                    self._exit_code = EXIT_FAILED
                    return False
                error = failure.message if failure is not None else str(exc)
                log.warning("database_unavailable", attempt=attempt, retry_in_seconds=delay, error=error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.app.lifecycle.reached(Phase.STOPPING), delay)
                return False
            delay = min(delay * 2, limits.db_retry_max_seconds)

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Await `work` unless a stop comes first (then cancel it); True when it completed."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.app.lifecycle.reached(Phase.STOPPING))
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _shut_down(self) -> None:
        """No new runs, drain the running ones, then stop HTTP: a trigger's answer and Twilio's
        callbacks need it until the runs are done. The CLI closes transports and engine after."""
        app = self.app
        self.stop()  # STOPPING=1 if no signal said it yet; jobs finish the item in hand and return
        app.schedule.shutdown()
        self.fires.cancel_retries()
        for task in self._background:
            if task.get_name() != "heartbeat":
                task.cancel()
        if app.inflight.names:
            timeout = app.settings.shutdown_timeout_seconds
            log.info("waiting_for_runs", runs=app.inflight.names, timeout_seconds=timeout)
            if not await app.inflight.drain(within_seconds=timeout, grace_seconds=app.limits.cancel_grace_seconds):
                await app.history.release_all()
        await app.http.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # Signals: in one place, switched off by tests that call stop() themselves -------------

    def _install_signal_handlers(self) -> None:
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            # The operator insists: exit now. Leases left behind expire and are taken over.
            log.warning("exiting_now", signal=name)
            sys.stderr.flush()
            os._exit(128 + signum)
        log.info("stop_requested", signal=name)
        self.stop()

    # What the schedule and the start-up run ---------------------------------------------

    def _on_fire(self, job: JobName, scheduled_for: datetime) -> None:
        """The schedule's callback: run the job for this fire (the run history decides if it may)."""
        fire = Fire(self.app.schedule.slot(job, scheduled_for), scheduled_for)
        self.fires.run(job, fire, Trigger.SCHEDULE)

    async def _catch_up(self) -> None:
        """Run once each job's latest fire of the catch-up window that no replica ran."""
        try:
            due = await self.app.history.missed_fires(self.app.schedule.schedules, self.app.schedule.tz)
        except DatabaseError as exc:
            log.warning("catch_up_failed", error=str(exc))
            return
        for job, fire in due:
            log.info("catching_up", job=job.value, slot=fire.slot, scheduled_for=fire.scheduled_for.isoformat())
            self.fires.run(job, fire, Trigger.CATCH_UP)

    # Background tasks: named; if one dies, the daemon stops ---------------------------------

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._background_done)
        self._background.append(task)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if self.app.lifecycle.stopping and task.cancelled():
            return
        error = None if task.cancelled() else task.exception()
        log.error("background_task_died", task=task.get_name(), exc_info=error or True)
        self._exit_code = EXIT_FAILED
        self.stop()


async def run_daemon(app: App, *, demo: bool, handle_signals: bool = True) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit status (CONTRACT §3)."""
    return await Daemon(app, demo=demo, handle_signals=handle_signals).run()
