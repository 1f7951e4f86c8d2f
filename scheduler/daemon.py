"""The long-running daemon (CONTRACT §5-§7): its start-up order, the schedule, the catch-up of
missed fires, the take-over of runs whose replica died, and a graceful stop.

Start: HTTP first (so /healthz answers), wait for the database, migrate and check tables, take
over abandoned runs, start the schedule, catch up, log `ready`, tell systemd.
Stop (SIGTERM/SIGINT): tell systemd, stop the schedule, let running jobs finish the item in hand
for up to SHUTDOWN_TIMEOUT_SECONDS, release what is left, stop HTTP. The CLI then closes the
transports and disposes of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from scheduler import __version__, systemd
from scheduler.app import App
from scheduler.catalog import GROUPS, JobName
from scheduler.db import runs as runs_db
from scheduler.db.errors import describe_db_error
from scheduler.db.platform import PlatformSchemaError
from scheduler.http import HttpServer
from scheduler.jobs.result import JobResult
from scheduler.metrics import SkipReason
from scheduler.runner import RUN_LEASE, Fire, Trigger
from scheduler.schedule import Schedule, missed_fire, slot_key

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
HEARTBEAT_SECONDS = 5.0  # how often the loop proves it is alive (and next-run gauges are refreshed)
HEALTH_STALE_SECONDS = 30.0  # six missed beats: /healthz answers 503 (the loop is blocked or dead)
REAP_SECONDS = 20.0  # a third of the run lease: a dead replica's run resumes within lease + 20 s
PENDING_GAUGE_SECONDS = 30.0  # messages_pending is a backlog figure; Prometheus scrapes every 15-60 s
DB_RETRY_FIRST_SECONDS = 1.0  # start-up retries the database quickly at first ...
DB_RETRY_MAX_SECONDS = 30.0  # ... then every 30 s, forever: the database may be down for a while
CANCEL_GRACE_SECONDS = 2.0  # after the shutdown timeout, time for cancelled runs to unwind
RELEASE_TIMEOUT_SECONDS = 5.0  # releasing leases at stop must not hang on a dead database


class Daemon:
    """One daemon process. `run()` returns the exit status; `stop()` is what SIGTERM does."""

    def __init__(self, app: App, *, demo: bool = False, handle_signals: bool = True) -> None:
        self.app = app
        self.demo = demo
        self.handle_signals = handle_signals
        self.schedule = Schedule.from_settings(app.settings, self._on_fire)
        self.http = HttpServer(app, run_group=self.run_group, liveness=self._liveness)
        self.listening = asyncio.Event()  # set once HTTP answers (before the database is awaited)
        self.ready = asyncio.Event()  # set when the `ready` line is logged
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._exit_code = EXIT_OK
        self._runs: dict[JobName, asyncio.Task[Any]] = {}  # the run in progress here, per job
        self._background: list[asyncio.Task[None]] = []
        self._last_beat = time.monotonic()
        self._signals = 0

    # Lifecycle ----------------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until stopped, shut down in order; returns the exit status."""
        started = time.monotonic()
        self._install_signal_handlers()
        try:
            await self.http.start()
            self.listening.set()
            self._spawn("heartbeat", self._heartbeat())
            if await self._start():
                next_runs = self._publish_next_runs()
                log.info(
                    "ready",
                    version=__version__,
                    replica=self.app.replica_id,
                    http_port=self.http.port,
                    timezone=self.app.settings.timezone,
                    next_runs={job.value: at.isoformat() if at else "off" for job, at in next_runs.items()},
                    startup_seconds=round(time.monotonic() - started, 3),
                )
                systemd.notify(systemd.READY)
                self.ready.set()
                if self.demo:
                    self._start_demo_round()
                await self._stop_requested.wait()
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
        if not self._stop_requested.is_set():
            systemd.notify(systemd.STOPPING)
            self._stop_requested.set()

    def _start_demo_round(self) -> None:
        jobs = GROUPS["all"]
        if self._start_run(jobs, partial(self._run_sequence, jobs, Trigger.MANUAL), name="demo:all") is None:
            log.warning("demo_round_skipped", reason="a resumed run is in progress")

    async def _start(self) -> bool:
        """Everything between `HTTP is up` and `ready`; False when start-up ended early."""
        if not await self._prepare_database():
            return False
        await self._reap()  # before the catch-up: a resumed run holds its job's claim
        self._spawn("reaper", self._reaper())
        self.schedule.start()
        if not self.demo:  # the demo runs every job at start anyway
            await self._catch_up()
        self._spawn("pending_gauge", self._pending_gauge())
        return not self._stop_requested.is_set()

    async def _prepare_database(self) -> bool:
        """Migrate and check the platform tables, waiting for the database with backoff."""
        delay = DB_RETRY_FIRST_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._unless_stopped(self.app.prepare_database())
            except PlatformSchemaError as exc:
                log.error("platform_schema_error", error=str(exc))  # noqa: TRY400 - the message is the whole story
                self._exit_code = EXIT_FAILED
                return False
            except (SQLAlchemyError, OSError) as exc:
                log.warning(
                    "database_unavailable", attempt=attempt, retry_in_seconds=delay, error=describe_db_error(exc)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)
                return False
            delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    async def _unless_stopped(self, work: Awaitable[None]) -> bool:
        """Await `work` unless a stop comes first (then cancel it); True when it completed."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop_requested.wait())
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
        self._stopping = True
        self.app.stopping = True  # jobs finish the item in hand and return
        self.app.metrics.set_ready(False)
        self.stop()  # STOPPING=1 if no signal said it yet
        self.schedule.shutdown()
        for task in self._background:
            if task.get_name() != "heartbeat":
                task.cancel()
        await self._drain()
        await self.http.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _drain(self) -> None:
        """Wait for running runs up to the shutdown timeout; cancel and release what is left."""
        running = set(self._runs.values())
        if not running:
            return
        timeout = self.app.settings.shutdown_timeout_seconds
        log.info("waiting_for_runs", jobs=sorted(self._runs), timeout_seconds=timeout)
        _, pending = await asyncio.wait(running, timeout=timeout)
        if not pending:
            return
        log.warning("shutdown_timeout", jobs=sorted(job for job, task in self._runs.items() if task in pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS), self.app.engine.begin() as conn:
                released = await runs_db.release_replica_leases(
                    conn, replica=self.app.replica_id, now=self.app.clock.now()
                )
            log.info("run_leases_released", runs=released)
        except (SQLAlchemyError, OSError) as exc:  # TimeoutError included: the leases expire by themselves
            log.warning("run_leases_not_released", error=describe_db_error(exc))

    # Signals: in one place, switched off by tests that drive stop() themselves --------------

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

    # Runs: at most one per job in this process ------------------------------------------

    def _start_run(
        self, jobs: Sequence[JobName], work: Callable[[], Coroutine[Any, Any, Any]], *, name: str
    ) -> asyncio.Task[Any] | None:
        """Start `work` as the run of these jobs; None when stopping or one of them is running here."""
        if self._stopping or any(job in self._runs for job in jobs):
            return None
        task = asyncio.create_task(work(), name=name)
        for job in jobs:
            self._runs[job] = task
        task.add_done_callback(partial(self._run_done, tuple(jobs)))
        return task

    def _run_done(self, jobs: tuple[JobName, ...], task: asyncio.Task[Any]) -> None:
        for job in jobs:
            if self._runs.get(job) is task:
                del self._runs[job]
        if not task.cancelled() and task.exception() is not None:
            log.error("run_crashed", task=task.get_name(), exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Return once no run is in progress here."""
        while self._runs:
            await asyncio.wait(set(self._runs.values()))

    def _skip_busy(self, job: JobName, fire: Fire) -> None:
        self.app.metrics.job_skipped.labels(job_name=job, reason=SkipReason.ALREADY_RUNNING).inc()
        reason = SkipReason.ALREADY_RUNNING.value
        log.info("job_skipped", job=job.value, reason=reason, slot=fire.slot, holder="this process")

    def _on_fire(self, job: JobName, scheduled_for: datetime) -> None:
        """The schedule's callback: run the job for this fire, unless it is still running here."""
        if self._stopping:
            return
        fire = Fire(self.schedule.slot(job, scheduled_for), scheduled_for)
        work = partial(self._run_fire, job, fire, Trigger.SCHEDULE)
        if self._start_run((job,), work, name=f"run:{job}") is None:
            self._skip_busy(job, fire)

    async def _run_fire(self, job: JobName, fire: Fire, trigger: Trigger) -> JobResult:
        return await self.app.runner.run(job, trigger=trigger, fire=fire)

    async def _run_sequence(self, jobs: Sequence[JobName], trigger: Trigger) -> list[JobResult]:
        results = []
        for job in jobs:
            if self.app.stopping:
                break
            results.append(await self.app.runner.run(job, trigger=trigger))
        return results

    async def run_group(self, group: str) -> list[JobResult] | None:
        """Run a group now (the HTTP triggers); None when one of its jobs is running here."""
        jobs = GROUPS[group]
        task = self._start_run(jobs, partial(self._run_sequence, jobs, Trigger.HTTP), name=f"http:{group}")
        if task is None:
            return None
        results: list[JobResult] = await asyncio.shield(task)  # a dropped client does not stop the run
        return results

    # Catch-up and take-over ---------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Run once each job's latest fire of the last 6 hours (after installation) that no replica ran."""
        now = self.app.clock.now()
        due: list[tuple[JobName, Fire]] = []
        try:
            async with self.app.engine.begin() as conn:
                installed_at = await runs_db.ensure_installed(conn, now=now)
                for job, expression in self.schedule.schedules.items():
                    scheduled_for = missed_fire(expression, self.schedule.tz, installed_at=installed_at, now=now)
                    if scheduled_for is None:
                        continue
                    fire = Fire(slot_key(expression, self.schedule.tz, scheduled_for), scheduled_for)
                    if not await runs_db.recorded_slots(conn, job=job.value, slots=[fire.slot]):
                        due.append((job, fire))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("catch_up_failed", error=describe_db_error(exc))
            return
        for job, fire in due:
            log.info("catching_up", job=job.value, slot=fire.slot, scheduled_for=fire.scheduled_for.isoformat())
            work = partial(self._run_fire, job, fire, Trigger.CATCH_UP)
            if self._start_run((job,), work, name=f"catch_up:{job}") is None:
                self._skip_busy(job, fire)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            await self._reap()

    async def _reap(self) -> None:
        """Resume runs still marked running whose lease expired: their replica died or gave them up."""
        try:
            async with self.app.engine.connect() as conn:
                abandoned = await runs_db.find_abandoned(conn, now=self.app.clock.now())
        except (SQLAlchemyError, OSError) as exc:
            log.warning("reaper_failed", error=describe_db_error(exc))
            return
        for run in abandoned:
            try:
                job = JobName(run.job_name)
            except ValueError:
                log.warning("abandoned_run_of_unknown_job", job=run.job_name, run_id=str(run.id))
                continue
            # Claim the job here before taking the run over, so no fire of it starts meanwhile.
            self._start_run((job,), partial(self._take_over, job, run), name=f"take_over:{job}")

    async def _take_over(self, job: JobName, run: runs_db.AbandonedRun) -> JobResult | None:
        try:
            async with self.app.engine.begin() as conn:
                won = await runs_db.take_over(
                    conn, run.id, replica=self.app.replica_id, now=self.app.clock.now(), lease=RUN_LEASE
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("take_over_failed", job=job.value, run_id=str(run.id), error=describe_db_error(exc))
            return None
        if not won:
            return None  # another replica was quicker
        log.info("run_taken_over", job=job.value, run_id=str(run.id), previous_replica=run.replica_id, slot=run.slot)
        fire = Fire(run.slot, run.scheduled_for) if run.slot is not None and run.scheduled_for is not None else None
        return await self.app.runner.run(job, trigger=Trigger.TAKE_OVER, fire=fire, resume=run.id)

    # Background tasks ---------------------------------------------------------------------

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._background_done)
        self._background.append(task)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping and task.cancelled():
            return
        error = None if task.cancelled() else task.exception()
        log.error("background_task_died", task=task.get_name(), exc_info=error or True)
        self._exit_code = EXIT_FAILED
        self.stop()

    async def _heartbeat(self) -> None:
        """Prove the loop alive (/healthz) and keep the next-run gauges current after each fire."""
        while True:
            self._last_beat = time.monotonic()
            self._publish_next_runs()  # from the first beat on: known before the database answers
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _liveness(self) -> str | None:
        silent = time.monotonic() - self._last_beat
        if silent > HEALTH_STALE_SECONDS:
            return f"no heartbeat for {silent:.0f} s"
        if self.ready.is_set() and not self._stopping and not self.schedule.running:
            return "the scheduler has stopped"
        return None

    async def _pending_gauge(self) -> None:
        while True:
            try:
                await self.app.dispatcher.refresh_pending_gauge()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("pending_gauge_not_updated", error=describe_db_error(exc))
            await asyncio.sleep(PENDING_GAUGE_SECONDS)

    def _publish_next_runs(self) -> dict[JobName, datetime | None]:
        times = self.schedule.next_run_times()
        for job, at in times.items():
            self.app.metrics.job_next_run.labels(job_name=job).set(at.timestamp() if at else 0)
        return times


async def run_daemon(app: App, *, demo: bool, handle_signals: bool = True) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit status (CONTRACT §3)."""
    return await Daemon(app, demo=demo, handle_signals=handle_signals).run()
