"""The console's reads of the run history: each job's last run, its runs in progress and its
pause (`status`), the history itself (`runs`), the database's clock and the schema's revision.

The first of the console's query modules (with `console_messages.py`, the messages and one
booking's trail, and `console_changes.py`, what an operator changes); each reads a few pages of
an index of migration 0004_console (newest first, by status), never the whole history. Plain
SQL on the console's asyncpg connection (see `console_sql.py` for why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from scheduler.db.console_sql import SCHEMA as _S
from scheduler.db.console_sql import Where, from_json
from scheduler.vocabulary import RunStatus

if TYPE_CHECKING:
    import asyncpg

FAILED_RUNS = (RunStatus.PARTIAL, RunStatus.ERROR)


@dataclass(frozen=True, slots=True)
class RunRow:
    """A row of the run history, as the console shows it."""

    id: UUID
    job: str
    trigger: str
    replica: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    lease_expires_at: datetime | None
    counts: dict[str, Any]
    errors: list[str]
    attempt: int

    @property
    def count(self) -> int | None:
        """The run's count (cancelledCount, deletedCount, remindersSent or messagesSent)."""
        values = [value for value in self.counts.values() if isinstance(value, int)]
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class PauseRow:
    job: str
    reason: str | None
    paused_by: str
    paused_at: datetime


@dataclass(frozen=True, slots=True)
class JobOverview:
    """What `status` says of one job: its last finished run, its runs in progress, its pause."""

    job: str
    last: RunRow | None
    running: list[RunRow]
    pause: PauseRow | None


def _run(row: asyncpg.Record) -> RunRow:
    return RunRow(
        id=row["id"],
        job=row["job_name"],
        trigger=row["trigger"],
        replica=row["replica_id"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_expires_at=row["lease_expires_at"],
        counts=dict(from_json(row["counts"]) or {}),
        errors=[str(error) for error in from_json(row["errors"]) or []],
        attempt=row["attempt"],
    )


_RUN_COLUMNS = (
    "id, job_name, trigger, replica_id, status, started_at, finished_at, lease_expires_at, counts, errors, attempt"
)

# Each job's last finished run (a fire skipped while the job was paused is no run): a backward
# step of the (job_name, started_at) index per job.
_LAST_RUNS_SQL = f"""
    SELECT last.* FROM unnest(CAST($1 AS text[])) AS j(job_name)
    CROSS JOIN LATERAL (
        SELECT {_RUN_COLUMNS} FROM {_S}.job_runs AS r
        WHERE r.job_name = j.job_name AND r.status NOT IN ('running', 'skipped') AND NOT r.dry_run
        ORDER BY r.started_at DESC LIMIT 1
    ) AS last
"""
_RUNNING_SQL = f"SELECT {_RUN_COLUMNS} FROM {_S}.job_runs WHERE status = 'running' ORDER BY started_at"
_PAUSES_SQL = f"SELECT job_name, reason, paused_by, paused_at FROM {_S}.job_pauses"


async def job_overview(conn: asyncpg.Connection, jobs: Sequence[str]) -> dict[str, JobOverview]:
    """Each job's last finished run, its runs in progress (any replica, any trigger) and its pause."""
    last = {row["job_name"]: _run(row) for row in await conn.fetch(_LAST_RUNS_SQL, list(jobs))}
    running: dict[str, list[RunRow]] = {}
    for row in await conn.fetch(_RUNNING_SQL):
        running.setdefault(row["job_name"], []).append(_run(row))
    pauses = {
        row["job_name"]: PauseRow(row["job_name"], row["reason"], row["paused_by"], row["paused_at"])
        for row in await conn.fetch(_PAUSES_SQL)
    }
    return {job: JobOverview(job, last.get(job), running.get(job, []), pauses.get(job)) for job in jobs}


async def database_now(conn: asyncpg.Connection) -> datetime:
    """The database's clock (leases are judged by it)."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def list_runs(
    conn: asyncpg.Connection, *, job: str | None, failed: bool, since: datetime | None, limit: int
) -> list[RunRow]:
    """The run history of every replica and every trigger, newest first."""
    where = Where("NOT dry_run")
    where.equal("job_name", job)
    if failed:
        where.conditions.append("status IN ('partial', 'error')")
    where.since("started_at", since)
    at_most = where.bind(limit)
    sql = (
        f"SELECT {_RUN_COLUMNS} FROM {_S}.job_runs WHERE {where.sql} ORDER BY started_at DESC, id DESC LIMIT {at_most}"
    )
    return [_run(row) for row in await conn.fetch(sql, *where.params)]


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    """The revision of our schema, or None when it was never migrated."""
    if not await conn.fetchval(f"SELECT to_regclass('{_S}.alembic_version') IS NOT NULL"):
        return None
    revision: str | None = await conn.fetchval(f"SELECT max(version_num) FROM {_S}.alembic_version")
    return revision
