"""The run history, which is also the claim: one row per scheduled fire, leased while running."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import installation, job_runs
from scheduler.vocabulary import RunStatus, SkipReason, Trigger


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of trying to start a run: the run id, or why not."""

    run_id: UUID | None
    refused_because: SkipReason | None = None  # claimed_elsewhere or already_running
    holder: str | None = None  # the replica that has it


@dataclass(frozen=True, slots=True)
class AbandonedRun:
    id: UUID
    job_name: str
    slot: str | None
    scheduled_for: datetime | None
    trigger: str
    replica_id: str


async def claim_run(
    conn: AsyncConnection,
    *,
    job: str,
    slot: str | None,
    scheduled_for: datetime | None,
    trigger: str,
    replica: str,
    now: datetime,
    lease: timedelta,
) -> Claim:
    """Insert the running row for this fire. Two unique indexes do the deciding: one run per
    (job, slot) ever, and one running run per job at a time.

    A manual run (trigger `manual`) is not held back by the second: `--run-once` always runs, the
    ledger and the outbox keeping every item once. Leases are judged by the database's clock.
    """
    run_id = uuid4()
    insert_run = (
        insert(job_runs)
        .values(
            id=run_id,
            job_name=job,
            slot=slot,
            scheduled_for=scheduled_for,
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


async def renew_lease(conn: AsyncConnection, run_id: UUID, *, replica: str, lease: timedelta) -> bool:
    """Extend a running run's lease (by the database's clock); False when the run is no longer
    ours (taken over)."""
    result = await conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id, job_runs.c.replica_id == replica, job_runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=func.now() + lease)
    )
    return bool(result.rowcount)


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


async def release_lease(conn: AsyncConnection, run_id: UUID, *, replica: str) -> None:
    """Give up a run that is stopping unfinished: another replica (or our next start) resumes it."""
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id, job_runs.c.replica_id == replica, job_runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=func.now())
    )


async def find_abandoned(conn: AsyncConnection) -> list[AbandonedRun]:
    """Runs still marked running whose lease has expired (by the database's clock): their
    replica died or gave them up."""
    rows = await conn.execute(
        select(
            job_runs.c.id,
            job_runs.c.job_name,
            job_runs.c.slot,
            job_runs.c.scheduled_for,
            job_runs.c.trigger,
            job_runs.c.replica_id,
        ).where(job_runs.c.status == RunStatus.RUNNING, job_runs.c.lease_expires_at < func.now())
    )
    return [AbandonedRun(**row._mapping) for row in rows]


async def take_over(conn: AsyncConnection, run_id: UUID, *, replica: str, lease: timedelta) -> bool:
    """Take an abandoned run; only one replica can win it. A replica whose clock runs ahead sees
    no lease expire early: the database's clock judges."""
    result = await conn.execute(
        update(job_runs)
        .where(
            job_runs.c.id == run_id,
            job_runs.c.status == RunStatus.RUNNING,
            job_runs.c.lease_expires_at < func.now(),
        )
        .values(replica_id=replica, lease_expires_at=func.now() + lease, attempt=job_runs.c.attempt + 1)
    )
    return bool(result.rowcount)


async def last_successes(conn: AsyncConnection) -> dict[str, datetime]:
    """Each job's last finish that did its work (success, or partial: its items' failures are the
    message alerts' business), from any replica (seeds the last-success gauge)."""
    rows = await conn.execute(
        select(job_runs.c.job_name, func.max(job_runs.c.finished_at))
        .where(job_runs.c.status.in_((RunStatus.SUCCESS, RunStatus.PARTIAL)))
        .group_by(job_runs.c.job_name)
    )
    return {row[0]: row[1] for row in rows}


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


async def release_replica_leases(conn: AsyncConnection, *, replica: str) -> int:
    """Give up every run this replica still holds (stopping after the shutdown timeout): they are
    resumed elsewhere at once instead of after their lease. Returns how many."""
    result = await conn.execute(
        update(job_runs)
        .where(job_runs.c.replica_id == replica, job_runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=func.now())
    )
    return int(result.rowcount)


async def any_run(conn: AsyncConnection) -> bool:
    """Whether anything ever ran against this database."""
    return bool(await conn.scalar(select(job_runs.c.id).limit(1)))
