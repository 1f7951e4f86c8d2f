"""The leases of running runs: renewed while a run is alive, given back when it stops unfinished,
and, once expired, found and taken over by another replica (one wins).

Apart from the run history's admission and records (`runs.py`) because this is the part that
keeps replicas honest with each other: every statement here judges a lease by the database's
clock (`now()`), never a process's, so replicas whose clocks differ agree on when a run was
abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import job_pauses, job_runs
from scheduler.vocabulary import RunStatus


@dataclass(frozen=True, slots=True)
class AbandonedRun:
    id: UUID
    job_name: str
    slot: str | None
    scheduled_for: datetime | None
    trigger: str
    replica_id: str


async def renew_lease(conn: AsyncConnection, run_id: UUID, *, replica: str, lease: timedelta) -> bool:
    """Extend a running run's lease (by the database's clock); False when the run is no longer
    ours (taken over)."""
    result = await conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id, job_runs.c.replica_id == replica, job_runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=func.now() + lease)
    )
    return bool(result.rowcount)


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
    paused = exists().where(job_pauses.c.job_name == job_runs.c.job_name)
    result = await conn.execute(
        update(job_runs)
        .where(
            job_runs.c.id == run_id,
            job_runs.c.status == RunStatus.RUNNING,
            job_runs.c.lease_expires_at < func.now(),
            ~paused,  # a paused job's run waits for the resume, like its fires
        )
        .values(replica_id=replica, lease_expires_at=func.now() + lease, attempt=job_runs.c.attempt + 1)
    )
    return bool(result.rowcount)


async def release_replica_leases(conn: AsyncConnection, *, replica: str) -> int:
    """Give up every run this replica still holds (stopping after the shutdown timeout): they are
    resumed elsewhere at once instead of after their lease. Returns how many."""
    result = await conn.execute(
        update(job_runs)
        .where(job_runs.c.replica_id == replica, job_runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=func.now())
    )
    return int(result.rowcount)
