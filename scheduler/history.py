"""The run history (`job_runs`) and everything decided with it, in one place: who may run a job
now (in this process and across replicas), the lease of each run in progress, the catch-up of
missed fires, the take-over of runs whose replica died, and handing back what is held at stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from uuid import UUID

import structlog

from scheduler.clock import Clock
from scheduler.db import pauses as pauses_db
from scheduler.db import run_leases
from scheduler.db import runs as runs_db
from scheduler.db.database import Database
from scheduler.db.errors import DatabaseError
from scheduler.db.pauses import Pause
from scheduler.db.run_leases import AbandonedRun
from scheduler.db.runs import LastFinishes
from scheduler.limits import Limits
from scheduler.records import Fire
from scheduler.schedule import missed_fire, slot_key
from scheduler.vocabulary import JobName, RunOutcome, RunStatus, SkipReason, Trigger

log = structlog.get_logger(__name__)

THIS_PROCESS = "this process"  # the holder named when a job's run is in progress here
# The fires of a paused job are skipped; a run an operator asks for (--run-once, /api/cron/*) runs.
SCHEDULED_TRIGGERS = frozenset({Trigger.SCHEDULE, Trigger.CATCH_UP, Trigger.RETRY})


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this run start?": its run id, or why not."""

    run_id: UUID | None
    refused: SkipReason | None = None
    holder: str | None = None  # the replica that has the job (or the fire); who paused it
    error: str | None = None  # the database could not be asked
    pause_reason: str | None = None  # refused because paused: the operator's reason


class RunHistory:
    """The one owner of `job_runs` for this process (replica `replica_id`)."""

    def __init__(self, db: Database, clock: Clock, limits: Limits, replica_id: str) -> None:
        self._db = db
        self._clock = clock
        self._limits = limits
        self.replica_id = replica_id
        self._running_here: set[JobName] = set()
        self.installed_at: datetime | None = None

    # Start -----------------------------------------------------------------------------

    async def prepare(self) -> dict[str, LastFinishes]:
        """Record the installation on the first start; return each job's last finishes (any replica)."""
        async with self._db.begin() as conn:
            self.installed_at = await runs_db.ensure_installed(conn, now=self._clock.now())
            return await runs_db.last_finishes(conn, [job.value for job in JobName])

    async def last_finishes(self) -> dict[str, LastFinishes]:
        """Each job's last finish that did its work, and in error: every replica, every manual run."""
        async with self._db.connect() as conn:
            return await runs_db.last_finishes(conn, [job.value for job in JobName])

    async def paused_jobs(self) -> dict[str, Pause]:
        """The jobs an operator paused, by name (kept in the database: every replica reads the same)."""
        async with self._db.connect() as conn:
            return await pauses_db.paused_jobs(conn)

    async def warn_if_paused(self, job: JobName, trigger: Trigger) -> None:
        """A run asked for by hand of a paused job runs, and says so (a dry run too)."""
        try:
            paused = (await self.paused_jobs()).get(job.value)
        except DatabaseError as exc:
            log.warning("pause_not_checked", job=job.value, error=str(exc))
            return
        if paused is not None:
            _warn_running_paused(job, trigger, paused.paused_by, paused.reason)

    # Admission ---------------------------------------------------------------------------

    def running_here(self, jobs: tuple[JobName, ...]) -> bool:
        """Whether one of these jobs has a run in progress (or about to start) in this process."""
        return any(job in self._running_here for job in jobs)

    def reserve(self, jobs: tuple[JobName, ...]) -> bool:
        """Hold these jobs in this process before their run starts (at once, no await between the
        check and the hold); False when one of them is held already."""
        if self.running_here(jobs):
            return False
        self._running_here.update(jobs)
        return True

    def release(self, jobs: tuple[JobName, ...]) -> None:
        """The runs of these jobs have ended here."""
        self._running_here.difference_update(jobs)

    async def admit(self, job: JobName, trigger: Trigger, fire: Fire | None) -> Admission:
        """Claim a run of `job` in the run history: at most one in progress per job in all
        replicas, one per scheduled fire ever; a manual run always runs. A scheduled fire of a
        paused job is refused (and recorded as skipped); a manual or HTTP run of one runs, warned."""
        alongside: list[str] = []
        paused: Pause | None = None
        try:
            row = runs_db.FireRow(
                job=job.value,
                slot=fire.slot if fire else None,
                scheduled_for=fire.scheduled_for if fire else None,
                trigger=trigger.value,
                replica=self.replica_id,
                now=self._clock.now(),
            )
            async with self._db.begin() as conn:
                if trigger in SCHEDULED_TRIGGERS:
                    pause = await runs_db.skip_if_paused(conn, row)
                    if pause is not None:
                        return Admission(None, SkipReason.PAUSED, holder=pause.paused_by, pause_reason=pause.reason)
                else:
                    paused = (await pauses_db.paused_jobs(conn)).get(job.value)
                claim = await runs_db.claim_run(conn, row, lease=self._limits.run_lease)
                if claim.run_id is not None and trigger is Trigger.MANUAL:
                    alongside = await runs_db.running_elsewhere(conn, job=job.value, run_id=claim.run_id)
        except DatabaseError as exc:
            return Admission(None, error=str(exc))
        if claim.run_id is not None and trigger is Trigger.MANUAL and alongside:
            # Allowed: the reminder ledger and the outbox keep every booking and message once.
            log.warning("running_alongside", job=job.value, other_runs=alongside)
        if claim.run_id is not None and paused is not None:
            _warn_running_paused(job, trigger, paused.paused_by, paused.reason)
        return Admission(claim.run_id, claim.refused_because, claim.holder)

    async def take_over(self, job: JobName, run: AbandonedRun) -> Admission:
        """Take an abandoned run of `job` for this replica; refused when another replica was quicker."""
        try:
            async with self._db.begin() as conn:
                won = await run_leases.take_over(conn, run.id, replica=self.replica_id, lease=self._limits.run_lease)
        except DatabaseError as exc:
            return Admission(None, error=str(exc))
        if not won:
            return Admission(None, SkipReason.CLAIMED_ELSEWHERE)
        log.info("run_taken_over", job=job.value, run_id=str(run.id), previous_replica=run.replica_id, slot=run.slot)
        return Admission(run.id)

    # While running -------------------------------------------------------------------------

    @asynccontextmanager
    async def leased(self, run_id: UUID) -> AsyncIterator[asyncio.Event]:
        """Keep the run's lease alive while the block runs; the event is set if the run is lost
        (another replica took it over): the job then stops after the item in hand."""
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(run_id, lost), name=f"lease-{run_id}")
        try:
            yield lost
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, run_id: UUID, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self._limits.run_lease_renew_seconds)
            try:
                async with self._db.begin() as conn:
                    still_ours = await run_leases.renew_lease(
                        conn, run_id, replica=self.replica_id, lease=self._limits.run_lease
                    )
            except DatabaseError as exc:
                log.warning("run_lease_not_renewed", error=str(exc))
                continue
            if not still_ours:
                log.warning("run_lease_lost", effect="stopping after the item in hand")
                lost.set()
                return

    # The end of a run --------------------------------------------------------------------

    async def finish(self, run_id: UUID, *, outcome: RunOutcome, counts: dict[str, Any], errors: list[str]) -> None:
        """Record how the run ended."""
        try:
            async with self._db.begin() as conn:
                await runs_db.finish_run(
                    conn,
                    run_id,
                    replica=self.replica_id,
                    status=RunStatus(outcome.value),
                    counts=counts,
                    errors=errors,
                    now=self._clock.now(),
                )
        except DatabaseError as exc:
            # The lease will run out and the run be resumed; the result itself stands.
            log.warning("run_history_not_written", error=str(exc))

    async def hand_back(self, run_id: UUID) -> None:
        """Give up a run stopping unfinished: another replica (or our next start) resumes it at once."""
        try:
            async with self._db.begin() as conn:
                await run_leases.release_lease(conn, run_id, replica=self.replica_id)
        except DatabaseError as exc:
            log.warning("run_history_not_written", error=str(exc))

    async def release_all(self) -> None:
        """At stop, after the shutdown timeout: give up every run this replica still holds."""
        try:
            async with asyncio.timeout(self._limits.release_timeout_seconds), self._db.begin() as conn:
                released = await run_leases.release_replica_leases(conn, replica=self.replica_id)
            log.info("run_leases_released", runs=released)
        except (DatabaseError, TimeoutError) as exc:  # the leases expire by themselves
            log.warning("run_leases_not_released", error=str(exc) or "timed out")

    # Catch-up and take-over ----------------------------------------------------------------

    async def missed_fires(self, schedules: Mapping[JobName, str], tz: tzinfo) -> list[tuple[JobName, Fire]]:
        """Each job's latest fire of the catch-up window (after installation) that no replica ran."""
        now = self._clock.now()
        installed_at = self.installed_at or now
        due: list[tuple[JobName, Fire]] = []
        async with self._db.connect() as conn:
            for job, expression in schedules.items():
                scheduled_for = missed_fire(
                    expression, tz, installed_at=installed_at, now=now, window=self._limits.catch_up_window
                )
                if scheduled_for is None:
                    continue
                fire = Fire(slot_key(expression, tz, scheduled_for), scheduled_for)
                if not await runs_db.recorded_slots(conn, job=job.value, slots=[fire.slot]):
                    due.append((job, fire))
        return due

    async def abandoned(self) -> list[tuple[JobName, AbandonedRun]]:
        """Runs still marked running whose lease expired (their replica died or gave them up)."""
        async with self._db.connect() as conn:
            runs = await run_leases.find_abandoned(conn)
        found = []
        for run in runs:
            try:
                found.append((JobName(run.job_name), run))
            except ValueError:
                log.warning("abandoned_run_of_unknown_job", job=run.job_name, run_id=str(run.id))
        return found


def _warn_running_paused(job: JobName, trigger: Trigger, paused_by: str, reason: str | None) -> None:
    log.warning(
        "running_while_paused",
        job=job.value,
        trigger=trigger.value,
        paused_by=paused_by,
        reason=reason,
        effect="a run asked for by hand runs; the job's scheduled fires stay skipped until `resume`",
    )
