"""The one wrapper every run goes through, scheduled or manual: admitted by the run history,
timed, logged, counted and recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID, uuid4

import structlog

from scheduler.clock import Clock
from scheduler.db.errors import DatabaseError
from scheduler.db.runs import AbandonedRun
from scheduler.heartbeat_pings import HeartbeatPings
from scheduler.history import Admission, RunHistory
from scheduler.jobs.catalog import JOBS
from scheduler.jobs.context import Dependencies, JobContext
from scheduler.jobs.result import JobResult
from scheduler.lifecycle import Lifecycle
from scheduler.records import Fire
from scheduler.vocabulary import JobName, RunOutcome, SkipReason, Trigger

log = structlog.get_logger(__name__)


class Runner:
    """Runs jobs: at most one run of a job at a time in all replicas, once per scheduled fire."""

    def __init__(
        self,
        deps: Dependencies,
        history: RunHistory,
        lifecycle: Lifecycle,
        clock: Clock,
        *,
        heartbeats: HeartbeatPings | None = None,
    ) -> None:
        self.deps = deps
        self.history = history
        self.lifecycle = lifecycle
        self.clock = clock
        self.heartbeats = heartbeats

    async def run(
        self,
        job: JobName,
        *,
        trigger: Trigger,
        fire: Fire | None = None,
        dry_run: bool = False,
        abandoned: AbandonedRun | None = None,
    ) -> JobResult:
        """Run one job now and return its result; a refused claim comes back as a skipped result.

        `abandoned` resumes a run whose replica died (its fire, if it had one, is kept).
        """
        now = self.clock.now()
        with structlog.contextvars.bound_contextvars(job=job.value):
            if dry_run:
                return await self._execute(job, uuid4(), trigger, now, dry_run=True, fire=fire)
            if abandoned is not None:
                admission = await self.history.take_over(job, abandoned)
                if abandoned.slot is not None and abandoned.scheduled_for is not None:
                    fire = Fire(abandoned.slot, abandoned.scheduled_for)
            else:
                admission = await self.history.admit(job, trigger, fire)
            if admission.run_id is None:
                return self._refused(job, now, admission, quietly=abandoned is not None)
            with structlog.contextvars.bound_contextvars(run_id=str(admission.run_id)):
                return await self._execute(job, admission.run_id, trigger, now, dry_run=False, fire=fire)

    def _refused(self, job: JobName, now: datetime, admission: Admission, *, quietly: bool) -> JobResult:
        metrics = self.deps.metrics
        result = JobResult(job, started_at=now, finished_at=now)
        if admission.error is not None:
            result.fail(f"database unreachable: {admission.error}")
            metrics.job_runs.labels(job_name=job, outcome=RunOutcome.ERROR).inc()
            metrics.job_errors.labels(job_name=job).inc()
            log.error("job_failed", reason="database_unreachable", error=admission.error)
            # Every attempt ends with one job_finished line, also one that could not start.
            log.error(
                "job_finished", outcome=RunOutcome.ERROR.value, reason="database_unreachable", errors=result.errors
            )
            if self.heartbeats is not None:
                self.heartbeats.finished(job, RunOutcome.ERROR)
            return result
        result.skipped = admission.refused
        if quietly:  # a take-over another replica won: nothing was due here
            return result
        reason = admission.refused or SkipReason.CLAIMED_ELSEWHERE
        if reason is SkipReason.ALREADY_RUNNING:
            result.errors.append(f"{job.value} is already running (replica {admission.holder})")
        self.count_skip(job, reason, admission.holder)
        return result

    def count_skip(self, job: JobName, reason: SkipReason, holder: str | None, *, slot: str | None = None) -> None:
        """A run that did not happen: counted and logged here, wherever it was refused."""
        self.deps.metrics.job_skipped.labels(job_name=job, reason=reason).inc()
        log.info("job_skipped", job=job.value, reason=reason.value, holder=holder, slot=slot)

    async def _execute(
        self, job: JobName, run_id: UUID, trigger: Trigger, now: datetime, *, dry_run: bool, fire: Fire | None
    ) -> JobResult:
        deps, record = self.deps, JOBS[job]
        log.info("job_started", trigger=trigger.value, dry_run=dry_run, slot=fire.slot if fire else None)
        if self.heartbeats is not None and not dry_run:
            self.heartbeats.started(job)
        deps.metrics.job_running.labels(job_name=job).inc()
        started = time.perf_counter()
        try:
            if dry_run:
                result = await self._call(job, run_id, now, dry_run=True, lost=None)
            else:
                async with self.history.leased(run_id) as lost:
                    result = await self._call(job, run_id, now, dry_run=False, lost=lost.is_set)
                if lost.is_set():
                    result.errors.append(f"{job.value} stopped early: another replica took the run over")
        finally:
            deps.metrics.job_running.labels(job_name=job).dec()
        elapsed = time.perf_counter() - started
        result.finished_at = self.clock.now()
        interrupted = self.lifecycle.stopping and not dry_run
        if not dry_run:
            if interrupted:
                await self.history.hand_back(run_id)
            else:
                counts = {record.count_key: result.count}
                await self.history.finish(run_id, outcome=result.outcome, counts=counts, errors=result.errors)
        result.interrupted = interrupted
        if self.heartbeats is not None and not dry_run and not interrupted:  # a handed-back run ends elsewhere
            self.heartbeats.finished(job, result.outcome)
        self._count(job, result, elapsed)
        finished = log.error if result.outcome is RunOutcome.ERROR else log.info
        finished(
            "job_finished",
            outcome=result.outcome.value,
            messages=dict(result.messages),
            duration_seconds=round(elapsed, 3),
            count=result.count,
            count_key=record.count_key,
            error_count=len(result.errors),
            errors=result.errors[:20],
            dry_run=dry_run,
            skipped=result.skipped.value if result.skipped else None,
            interrupted=interrupted,
        )
        return result

    async def _call(
        self, job: JobName, run_id: UUID, now: datetime, *, dry_run: bool, lost: Callable[[], bool] | None
    ) -> JobResult:
        """The job's function, or a table_missing skip; a crash becomes the run's error."""
        deps, record = self.deps, JOBS[job]
        missing = deps.tables.missing(record.needs_tables)
        if missing:
            log.warning("job_skipped_table_missing", table=", ".join(missing))
            return JobResult(job, started_at=now, dry_run=dry_run, skipped=SkipReason.TABLE_MISSING)
        lifecycle = self.lifecycle

        def should_stop() -> bool:
            return lifecycle.should_stop() or (lost is not None and lost())

        ctx = JobContext(deps, run_id=run_id, dry_run=dry_run, should_stop=should_stop, log=log)
        try:
            return await record.run(ctx, now)
        except DatabaseError as exc:
            result = JobResult(job, started_at=now, dry_run=dry_run)
            result.fail(f"database error: {exc}")
        except Exception as exc:
            log.exception("job_crashed")
            result = JobResult(job, started_at=now, dry_run=dry_run)
            result.fail(f"job crashed: {type(exc).__name__}: {exc}")
        return result

    def _count(self, job: JobName, result: JobResult, elapsed: float) -> None:
        metrics = self.deps.metrics
        metrics.job_runs.labels(job_name=job, outcome=result.outcome).inc()
        metrics.job_duration.labels(job_name=job).observe(elapsed)
        if result.errors:
            metrics.job_errors.labels(job_name=job).inc(len(result.errors))
        if result.skipped is SkipReason.TABLE_MISSING:
            metrics.job_skipped.labels(job_name=job, reason=SkipReason.TABLE_MISSING).inc()
        if result.outcome is not RunOutcome.ERROR and not result.dry_run:  # partial did its work too
            metrics.job_last_success.labels(job_name=job).set((result.finished_at or result.started_at).timestamp())
