"""The run history, which is also the claim: one row per scheduled fire, leased while running.

Here: admission (a fire claimed, skipped while paused, or retried), a run's record when it ends,
and the reads of the history; the leases of running runs, and taking over abandoned ones, are
`run_leases.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import ARRAY, Text, and_, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import installation, job_pauses, job_runs
from scheduler.vocabulary import RunStatus, SkipReason, Trigger


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of trying to start a run: the run id, or why not."""

    run_id: UUID | None
    refused_because: SkipReason | None = None  # claimed_elsewhere or already_running
    holder: str | None = None  # the replica that has it


@dataclass(frozen=True, slots=True)
class PausedBy:
    """Who paused a job, and why (the operator's `--reason`)."""

    paused_by: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class LastFinishes:
    """When a job's runs last ended having done their work (success or partial), and in error."""

    success: datetime | None
    error: datetime | None


@dataclass(frozen=True, slots=True)
class FireRow:
    """The run-history row a fire starts as: which job, which scheduled fire (none for a manual
    run), how it was triggered, by which replica, when."""

    job: str
    slot: str | None
    scheduled_for: datetime | None
    trigger: str
    replica: str
    now: datetime


async def claim_run(conn: AsyncConnection, fire: FireRow, *, lease: timedelta) -> Claim:
    """Insert the running row for this fire. Two unique indexes do the deciding: one run per
    (job, slot) ever, and one running run per job at a time.

    A manual run (trigger `manual`) is not held back by the second: `--run-once` always runs, the
    ledger and the outbox keeping every item once. Leases are judged by the database's clock.
    """
    job, slot, trigger, replica, now = fire.job, fire.slot, fire.trigger, fire.replica, fire.now
    run_id = uuid4()
    insert_run = (
        insert(job_runs)
        .values(
            id=run_id,
            job_name=job,
            slot=slot,
            scheduled_for=fire.scheduled_for,
            trigger=trigger,
            status=RunStatus.RUNNING,
            replica_id=replica,
            dry_run=False,
            attempt=1,
            started_at=now,
            lease_expires_at=func.now() + lease,
        )
        .on_conflict_do_nothing()
        .returning(job_runs.c.id)
    )
    if trigger == Trigger.RETRY and slot is not None:
        again = await conn.scalar(_retry_errored_fire(job, slot, replica=replica, now=now, lease=lease))
        if again is not None:
            return Claim(again)
    if (await conn.scalar(insert_run)) is not None:
        return Claim(run_id)
    if slot is not None:
        holder = await conn.scalar(
            select(job_runs.c.replica_id).where(job_runs.c.job_name == job, job_runs.c.slot == slot)
        )
        if holder is not None:
            return Claim(None, SkipReason.CLAIMED_ELSEWHERE, holder)
    holder = await conn.scalar(
        select(job_runs.c.replica_id).where(job_runs.c.job_name == job, job_runs.c.status == RunStatus.RUNNING)
    )
    return Claim(None, SkipReason.ALREADY_RUNNING, holder)


async def skip_if_paused(conn: AsyncConnection, fire: FireRow) -> PausedBy | None:
    """Who paused the job, when it is paused; the fire is then recorded as skipped, in the same
    statement, so that no catch-up runs it later (unless its slot has a row already: a retry of a
    failed fire, or another replica that recorded the skip first)."""
    job, now = fire.job, fire.now
    pause = select(job_pauses.c.paused_by, job_pauses.c.reason).where(job_pauses.c.job_name == job).cte("pause")
    columns: dict[str, Any] = {
        "id": literal(uuid4(), PG_UUID(as_uuid=True)),
        "job_name": literal(job, Text),
        "slot": literal(fire.slot, Text),
        "scheduled_for": literal(fire.scheduled_for, job_runs.c.scheduled_for.type),
        "trigger": literal(fire.trigger, Text),
        "status": literal(RunStatus.SKIPPED.value, Text),
        "replica_id": literal(fire.replica, Text),
        "dry_run": literal(False),
        "attempt": literal(1),
        "started_at": literal(now, job_runs.c.started_at.type),
        "finished_at": literal(now, job_runs.c.finished_at.type),
    }
    record = (
        insert(job_runs)
        .from_select(list(columns), select(*columns.values()).select_from(pause))
        .on_conflict_do_nothing()
        .cte("recorded")
    )
    row = (await conn.execute(select(pause.c.paused_by, pause.c.reason).add_cte(record))).first()
    return PausedBy(row.paused_by, row.reason) if row is not None else None


def _retry_errored_fire(job: str, slot: str, *, replica: str, now: datetime, lease: timedelta) -> Any:
    """A fire whose run ended in error runs again under the same row (its attempt counted), unless
    a run of the job is in progress (the one-running rule holds for retries too)."""
    other = job_runs.alias("other")
    in_progress = (
        select(other.c.id)
        .where(
            other.c.job_name == job,
            other.c.status == RunStatus.RUNNING,
            other.c.dry_run.is_(False),
            other.c.trigger != Trigger.MANUAL,
        )
        .exists()
    )
    return (
        update(job_runs)
        .where(job_runs.c.job_name == job, job_runs.c.slot == slot, job_runs.c.status == RunStatus.ERROR, ~in_progress)
        .values(
            status=RunStatus.RUNNING,
            trigger=Trigger.RETRY,
            replica_id=replica,
            attempt=job_runs.c.attempt + 1,
            started_at=now,
            finished_at=None,
            lease_expires_at=func.now() + lease,
            counts=None,
            errors=None,
        )
        .returning(job_runs.c.id)
    )


async def running_elsewhere(conn: AsyncConnection, *, job: str, run_id: UUID) -> list[str]:
    """The replicas of the job's other runs in progress (a manual run says it runs alongside them)."""
    rows = await conn.scalars(
        select(job_runs.c.replica_id).where(
            job_runs.c.job_name == job, job_runs.c.status == RunStatus.RUNNING, job_runs.c.id != run_id
        )
    )
    return list(rows)


async def finish_run(
    conn: AsyncConnection,
    run_id: UUID,
    *,
    replica: str,
    status: RunStatus,
    counts: dict[str, Any],
    errors: Sequence[str],
    now: datetime,
) -> None:
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id, job_runs.c.replica_id == replica)
        .values(status=status, finished_at=now, lease_expires_at=None, counts=counts, errors=list(errors))
    )


async def last_finishes(conn: AsyncConnection, jobs: Sequence[str]) -> dict[str, LastFinishes]:
    """Each job's last finish that did its work and its last finish in error, from every replica
    and every trigger (manual runs included): the gauges alert rules read. One index lookup per
    job and status (job_runs_last_finish), however long the history."""
    names = func.unnest(cast(list(jobs), ARRAY(Text))).table_valued("job_name").render_derived(name="j")

    def latest(status: RunStatus) -> Any:
        return (
            select(func.max(job_runs.c.finished_at))
            .where(job_runs.c.job_name == names.c.job_name, job_runs.c.status == status)
            .scalar_subquery()
        )

    rows = await conn.execute(
        select(
            names.c.job_name,
            func.greatest(latest(RunStatus.SUCCESS), latest(RunStatus.PARTIAL)).label("success"),
            latest(RunStatus.ERROR).label("error"),
        )
    )
    return {row.job_name: LastFinishes(row.success, row.error) for row in rows}


async def recorded_slots(conn: AsyncConnection, *, job: str, slots: Sequence[str]) -> set[str]:
    """Which of these slots of a job already have a run (by any replica)."""
    if not slots:
        return set()
    rows = await conn.scalars(
        select(job_runs.c.slot).where(and_(job_runs.c.job_name == job, job_runs.c.slot.in_(list(slots))))
    )
    return {slot for slot in rows if slot is not None}


async def ensure_installed(conn: AsyncConnection, *, now: datetime) -> datetime:
    """When the daemon first ran against this database (recorded on the first start)."""
    await conn.execute(insert(installation).values(id=1, installed_at=now).on_conflict_do_nothing())
    installed: datetime = (await conn.execute(select(installation.c.installed_at))).scalar_one()
    return installed


async def any_run(conn: AsyncConnection) -> bool:
    """Whether anything ever ran against this database."""
    return bool(await conn.scalar(select(job_runs.c.id).limit(1)))
