"""`--list-jobs`: each job's schedule and next run in the configured zone, and, when the database
answers within a second or so, its last run, outcome and pause. Loaded only for that flag."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler.cli_exits import PROG
from scheduler.jobs.catalog import JOBS, schedule_for

if TYPE_CHECKING:
    from scheduler.limits import Limits
    from scheduler.settings import Settings


async def _fetch_last_runs(settings: Settings, limits: Limits) -> dict[str, Any] | None:
    """Each job's last finished run and pause, or None when the database does not answer quickly."""
    from scheduler.db import console_queries, direct
    from scheduler.db.errors import DatabaseError

    try:
        async with direct.connect(
            settings.async_database_url() or "",
            connect_timeout_seconds=limits.list_jobs_connect_timeout_seconds,
            command_timeout_seconds=limits.list_jobs_connect_timeout_seconds,
        ) as conn:
            if await console_queries.schema_revision(conn) is None:
                return None
            return dict(await console_queries.job_overview(conn, [job.value for job in JOBS]))
    except (DatabaseError, TimeoutError) as exc:
        print(f"{PROG}: last runs not shown: {exc}", file=sys.stderr)
        return None


def read_last_runs(settings: Settings, limits: Limits) -> dict[str, Any] | None:
    """The database's answer for the listing, None without DATABASE_URL or an answer."""
    if settings.database_url is None:
        return None
    import asyncio

    return asyncio.run(_fetch_last_runs(settings, limits))


def list_jobs(settings: Settings, now: datetime, *, last_runs: Mapping[str, Any] | None = None) -> str:
    """A table: job, schedule, time zone, enabled, next run (in the configured zone); with the
    database's answer (`last_runs`), also each job's last run, its outcome and whether it is paused."""
    from scheduler.cron import OFF
    from scheduler.triggers import build_trigger

    header = ("JOB", "SCHEDULE", "TIMEZONE", "ENABLED", "NEXT RUN")
    rows = [header + (("LAST RUN", "OUTCOME", "PAUSED") if last_runs is not None else ())]
    for job in JOBS:
        expression = schedule_for(settings, job)
        if expression == OFF:
            row: tuple[str, ...] = (job.value, OFF, settings.timezone, "no", "-")
        else:
            next_fire = build_trigger(expression, settings.tz).get_next_fire_time(None, now.astimezone(settings.tz))
            row = (job.value, expression, settings.timezone, "yes", next_fire.isoformat() if next_fire else "-")
        if last_runs is not None:
            overview = last_runs[job.value]
            last = overview.last
            row += (
                (last.finished_at or last.started_at).astimezone(settings.tz).isoformat(timespec="seconds")
                if last
                else "never",
                last.status if last else "-",
                "yes" if overview.pause else "no",
            )
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
