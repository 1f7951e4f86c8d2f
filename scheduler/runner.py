"""The one wrapper every run goes through, scheduled or manual: admitted by the run history,
timed, logged, counted and recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID, uuid4

import structlog

from scheduler import progress
from scheduler.clock import Clock
from scheduler.db.errors import DatabaseError
from scheduler.db.run_leases import AbandonedRun
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
                await self.history.warn_if_paused(job, trigger)
                return await self._execute(job, uuid4(), trigger, now, dry_run=True, fire=fire)
            if abandoned is not None:
                admission = await self.history.take_over(job, abandoned)
                if abandoned.slot is not None and abandoned.scheduled_for is not None:
                    fire = Fire(abandoned.slot, abandoned.scheduled_for)
            else:
                admission = await self.history.admit(job, trigger, fire)
            if admission.run_id is None:
                return self._refused(job, now, admission, trigger, quietly=abandoned is not None, fire=fire)
            with structlog.contextvars.bound_contextvars(run_id=str(admission.run_id)):
                return await self._execute(job, admission.run_id, trigger, now, dry_run=False, fire=fire)

    def _refused(
        self, job: JobName, now: datetime, admission: Admission, trigger: Trigger, *, quietly: bool, fire: Fire | None
    ) -> JobResult:
        metrics = self.deps.metrics
        result = JobResult(job, started_at=now, finished_at=now)
        if admission.error is not None:
            result.fail(f"database unreachable: {admission.error}")
            self._count_outcome(job, RunOutcome.ERROR, trigger)
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
        slot = fire.slot if fire else None
        if quietly:  # a take-over another replica won: nothing was due here
            return result
        reason = admission.refused or SkipReason.CLAIMED_ELSEWHERE
        if reason is SkipReason.ALREADY_RUNNING:
            result.errors.append(f"{job.value} is already running (replica {admission.holder})")
        if reason is SkipReason.PAUSED:
            self.deps.metrics.job_paused.labels(job_name=job).set(1)  # known here before the next poll
            self.count_skip(
                job, reason, None, slot=slot, paused_by=admission.holder, pause_reason=admission.pause_reason
            )
        else:
            self.count_skip(job, reason, admission.holder, slot=slot)
        return result

    def count_skip(
        self, job: JobName, reason: SkipReason, holder: str | None, *, slot: str | None = None, **why: str | None
    ) -> None:
        """A run that did not happen: counted and logged here, wherever it was refused."""
        self.deps.metrics.job_skipped.labels(job_name=job, reason=reason).inc()
        log.info("job_skipped", job=job.value, reason=reason.value, holder=holder, slot=slot, **why)

    async def _execute(
        self, job: JobName, run_id: UUID, trigger: Trigger, now: datetime, *, dry_run: bool, fire: Fire | None
    ) -> JobResult:
        deps, record = self.deps, JOBS[job]
        log.info("job_started", trigger=trigger.value, dry_run=dry_run, slot=fire.slot if fire else None)
        if self.heartbeats is not None and not dry_run:
            self.heartbeats.started(job)
        deps.metrics.job_running.labels(job_name=job).inc()
        started = time.perf_counter()
        with progress.tracking(job.value) as counted:
            ticker = asyncio.create_task(self._report_progress(counted, started), name=f"progress-{run_id}")
            try:
                if dry_run:
                    result = await self._call(job, run_id, now, dry_run=True, lost=None)
                else:
                    async with self.history.leased(run_id) as lost:
                        result = await self._call(job, run_id, now, dry_run=False, lost=lost.is_set)
                    if lost.is_set():
                        result.errors.append(f"{job.value} stopped early: another replica took the run over")
            finally:
                ticker.cancel()
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
        self._count(job, result, trigger, elapsed)
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

    async def _report_progress(self, counted: progress.Progress, started: float) -> None:
        """A long run says what it has done so far, every `progress_log_seconds` (the first after as long)."""
        interval = self.deps.limits.progress_log_seconds
        while True:
            await asyncio.sleep(interval)
            log.info("job_progress", elapsed_seconds=round(time.perf_counter() - started, 1), done=dict(counted.counts))

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

    def _count_outcome(self, job: JobName, outcome: RunOutcome, trigger: Trigger) -> None:
        """A fire's retry that fails again is the same failed fire, not one more: JobFailing pages
        once per failed fire (CONTRACT §7), so only the fire's first failure counts as an `error`
        run. The retry's errors, its log line and the last-error gauge still count."""
        if outcome is RunOutcome.ERROR and trigger is Trigger.RETRY:
            return
        self.deps.metrics.job_runs.labels(job_name=job, outcome=outcome).inc()

    def _count(self, job: JobName, result: JobResult, trigger: Trigger, elapsed: float) -> None:
        metrics = self.deps.metrics
        self._count_outcome(job, result.outcome, trigger)
        metrics.job_duration.labels(job_name=job).observe(elapsed)
        if result.errors:
            metrics.job_errors.labels(job_name=job).inc(len(result.errors))
        if result.skipped is SkipReason.TABLE_MISSING:
            metrics.job_skipped.labels(job_name=job, reason=SkipReason.TABLE_MISSING).inc()
        if result.dry_run:
            return
        # partial did its work too: it moves the last success
        metrics.finished(job, failed=result.outcome is RunOutcome.ERROR, at=result.finished_at or result.started_at)
