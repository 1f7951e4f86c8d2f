"""The one wrapper every run goes through, scheduled or manual: claim, time, log, metrics, history."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID, uuid4

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.catalog import JOBS, JobName
from scheduler.clock import Clock
from scheduler.db import runs as runs_db
from scheduler.db.errors import describe_db_error
from scheduler.db.platform import PlatformTables
from scheduler.jobs.context import JobContext
from scheduler.jobs.registry import JOB_FUNCTIONS
from scheduler.jobs.result import JobResult
from scheduler.metrics import Metrics, RunOutcome, SkipReason
from scheduler.notify.dispatcher import Dispatcher
from scheduler.notify.outbox import MessagePlanner
from scheduler.settings import Settings

log = structlog.get_logger(__name__)

RUN_LEASE = timedelta(seconds=60)  # a run whose replica vanished is resumed elsewhere after this
LEASE_RENEW_SECONDS = 20.0  # a third of the lease: two renewals may fail before it runs out


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    CATCH_UP = "catch_up"
    MANUAL = "manual"  # --run-once
    HTTP = "http"  # /api/cron/*
    TAKE_OVER = "take_over"  # resuming a run whose replica died


@dataclass(frozen=True, slots=True)
class Fire:
    """Which scheduled fire a run is for: its slot is the key that makes it happen once."""

    slot: str
    scheduled_for: datetime


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What every job gets, built once by the app."""

    settings: Settings
    engine: AsyncEngine
    tables: PlatformTables
    metrics: Metrics
    planner: MessagePlanner
    dispatcher: Dispatcher
    clock: Clock
    replica_id: str


class Runner:
    """Runs jobs: at most one run of a job at a time in all replicas, once per scheduled fire."""

    def __init__(self, deps: Dependencies, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.deps = deps
        self.should_stop = should_stop

    async def run(
        self,
        job: JobName,
        *,
        trigger: Trigger,
        fire: Fire | None = None,
        dry_run: bool = False,
        resume: UUID | None = None,
    ) -> JobResult:
        """Run one job now and return its result; a refused claim comes back as a skipped result."""
        deps = self.deps
        now = deps.clock.now()
        run_id = resume or uuid4()
        with structlog.contextvars.bound_contextvars(job=job.value, run_id=str(run_id)):
            if not dry_run and resume is None:
                claim = await self._claim(job, trigger, fire, now)
                if claim.run_id is None:
                    return self._refused(job, now, claim)
                run_id = claim.run_id
                structlog.contextvars.bind_contextvars(run_id=str(run_id))
            return await self._run_claimed(job, run_id, trigger, now, dry_run=dry_run, fire=fire)

    async def _claim(self, job: JobName, trigger: Trigger, fire: Fire | None, now: datetime) -> runs_db.Claim:
        deps = self.deps
        try:
            async with deps.engine.begin() as conn:
                return await runs_db.claim_run(
                    conn,
                    job=job.value,
                    slot=fire.slot if fire else None,
                    scheduled_for=fire.scheduled_for if fire else None,
                    trigger=trigger.value,
                    replica=deps.replica_id,
                    now=now,
                    lease=RUN_LEASE,
                )
        except (SQLAlchemyError, OSError) as exc:
            return runs_db.Claim(None, "database_unreachable", describe_db_error(exc))

    def _refused(self, job: JobName, now: datetime, claim: runs_db.Claim) -> JobResult:
        result = JobResult(job, started_at=now, finished_at=now)
        reason = claim.refused_because or "unknown"
        if reason == "database_unreachable":
            result.errors.append(f"database unreachable: {claim.holder}")
            self.deps.metrics.job_runs.labels(job_name=job, outcome=RunOutcome.ERROR).inc()
            self.deps.metrics.job_errors.labels(job_name=job).inc()
            log.error("job_failed", reason="database_unreachable", error=claim.holder)
            return result
        result.skipped = reason
        if reason == SkipReason.ALREADY_RUNNING:
            result.errors.append(f"{job.value} is already running (replica {claim.holder})")
        self.deps.metrics.job_skipped.labels(job_name=job, reason=reason).inc()
        log.info("job_skipped", reason=reason, holder=claim.holder)
        return result

    async def _run_claimed(
        self, job: JobName, run_id: UUID, trigger: Trigger, now: datetime, *, dry_run: bool, fire: Fire | None
    ) -> JobResult:
        deps = self.deps
        metrics = deps.metrics
        lease_lost = asyncio.Event()  # another replica took the run over: stop after the item in hand
        ctx = JobContext(
            settings=deps.settings,
            engine=deps.engine,
            tables=deps.tables,
            metrics=metrics,
            planner=deps.planner,
            dispatcher=deps.dispatcher,
            run_id=run_id,
            dry_run=dry_run,
            should_stop=lambda: self.should_stop() or lease_lost.is_set(),
            log=log,
        )
        log.info("job_started", trigger=trigger.value, dry_run=dry_run, slot=fire.slot if fire else None)
        metrics.job_running.labels(job_name=job).inc()
        renewer = None if dry_run else asyncio.create_task(self._renew(run_id, lease_lost), name=f"lease-{job.value}")
        started = time.perf_counter()
        try:
            result = await JOB_FUNCTIONS[job](ctx, now)
        except (SQLAlchemyError, OSError) as exc:
            result = JobResult(job, started_at=now, dry_run=dry_run)
            result.errors.append(f"database error: {describe_db_error(exc)}")
        except Exception as exc:
            log.exception("job_crashed")
            result = JobResult(job, started_at=now, dry_run=dry_run)
            result.errors.append(f"job crashed: {type(exc).__name__}: {exc}")
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            metrics.job_running.labels(job_name=job).dec()
        elapsed = time.perf_counter() - started
        result.finished_at = deps.clock.now()
        if lease_lost.is_set():
            result.errors.append(f"{job.value} stopped early: another replica took the run over")
        stopped_early = self.should_stop() and not dry_run
        await self._record(job, run_id, result, dry_run, stopped_early)

        outcome = RunOutcome.SUCCESS if result.success else RunOutcome.ERROR
        metrics.job_runs.labels(job_name=job, outcome=outcome).inc()
        metrics.job_duration.labels(job_name=job).observe(elapsed)
        if result.errors:
            metrics.job_errors.labels(job_name=job).inc(len(result.errors))
        if result.skipped == SkipReason.TABLE_MISSING:
            metrics.job_skipped.labels(job_name=job, reason=SkipReason.TABLE_MISSING).inc()
        if result.success and not dry_run:
            metrics.job_last_success.labels(job_name=job).set(result.finished_at.timestamp())
        log.info(
            "job_finished",
            outcome=outcome.value,
            duration_seconds=round(elapsed, 3),
            count=result.count,
            count_key=JOBS[job].count_key,
            error_count=len(result.errors),
            errors=result.errors[:20],
            dry_run=dry_run,
            skipped=result.skipped,
            interrupted=stopped_early,
        )
        return result

    async def _record(self, job: JobName, run_id: UUID, result: JobResult, dry_run: bool, interrupted: bool) -> None:
        if dry_run:
            return  # a dry run writes nothing, not even history
        deps = self.deps
        now = deps.clock.now()
        try:
            async with deps.engine.begin() as conn:
                if interrupted:
                    # Stopping mid-run: hand the run back so another replica (or our next start) resumes it.
                    await runs_db.release_lease(conn, run_id, replica=deps.replica_id, now=now)
                else:
                    await runs_db.finish_run(
                        conn,
                        run_id,
                        replica=deps.replica_id,
                        status="success" if result.success else "error",
                        counts={JOBS[job].count_key: result.count},
                        errors=result.errors,
                        now=now,
                    )
        except (SQLAlchemyError, OSError) as exc:
            # The lease will run out and the run be resumed; the result itself stands.
            log.warning("run_history_not_written", error=describe_db_error(exc))

    async def _renew(self, run_id: UUID, lost: asyncio.Event) -> None:
        """Keep the run's lease alive; set `lost` when it turns out another replica has the run."""
        deps = self.deps
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                async with deps.engine.begin() as conn:
                    still_ours = await runs_db.renew_lease(
                        conn, run_id, replica=deps.replica_id, now=deps.clock.now(), lease=RUN_LEASE
                    )
                if not still_ours:
                    log.warning("run_lease_lost", effect="stopping after the item in hand")
                    lost.set()
                    return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("run_lease_not_renewed", error=describe_db_error(exc))
