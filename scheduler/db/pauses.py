"""Paused jobs: a row per job an operator paused. Every replica reads them, so a pause holds
across the fleet without a restart; times are the database's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import job_pauses


@dataclass(frozen=True, slots=True)
class Pause:
    job_name: str
    reason: str | None
    paused_by: str
    paused_at: datetime


async def pause(conn: AsyncConnection, jobs: Iterable[str], *, reason: str | None, by: str) -> list[str]:
    """Pause each job not paused yet; returns those that changed (a repeated pause keeps the
    first one's time and reason)."""
    rows = [{"job_name": job, "reason": reason, "paused_by": by} for job in jobs]
    if not rows:
        return []
    statement = insert(job_pauses).values(rows).on_conflict_do_nothing().returning(job_pauses.c.job_name)
    return list((await conn.execute(statement)).scalars())


async def resume(conn: AsyncConnection, jobs: Iterable[str]) -> list[str]:
    """Lift the pause of each job; returns those that were paused."""
    names = list(jobs)
    if not names:
        return []
    statement = delete(job_pauses).where(job_pauses.c.job_name.in_(names)).returning(job_pauses.c.job_name)
    return list((await conn.execute(statement)).scalars())


async def paused_jobs(conn: AsyncConnection) -> dict[str, Pause]:
    """Every paused job, by name."""
    result = await conn.execute(select(job_pauses))
    return {row.job_name: Pause(row.job_name, row.reason, row.paused_by, row.paused_at) for row in result}
