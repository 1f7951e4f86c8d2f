"""The daemon's own data kept tidy (CONTRACT §2, §4): settled messages lose their address and text
after MESSAGE_RETENTION_DAYS and go, with the run history, after RUN_HISTORY_RETENTION_DAYS."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler import progress
from scheduler.db import cleanup as cleanup_db
from scheduler.db.cleanup import Purge
from scheduler.db.errors import DatabaseError
from scheduler.jobs.batches import purge_in_batches
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.vocabulary import JobName

JOB = JobName.CLEANUP_SCHEDULER_HISTORY


async def cleanup_scheduler_history(ctx: JobContext, now: datetime) -> JobResult:
    """Delete old settled messages, blank the text of the younger ones, delete old finished runs.
    Never a run in progress, never a message still owed (pending, held, sending). Each step walks
    its table in batches of DELETE_BATCH_SIZE, each its own transaction; a failed batch ends the run.

    The count is the rows deleted; `details` tell runs deleted, messages deleted and blanked, and
    the batches (transactions) it took.
    """
    settings = ctx.deps.settings
    history_cutoff = now - timedelta(days=settings.run_history_retention_days)
    text_cutoff = now - timedelta(days=settings.message_retention_days)
    result = JobResult(JOB, started_at=now, dry_run=ctx.dry_run)
    if ctx.dry_run:
        return await _dry_run(ctx, result, history_cutoff, text_cutoff)
    result.details["batches"] = 0
    # Deleting first spares blanking the rows about to go.
    steps = (
        ("messagesDeleted", "deleted", "deliveries", cleanup_db.OLD_MESSAGES, history_cutoff),
        ("messagesBlanked", "blanked", "deliveries", cleanup_db.MESSAGE_CONTENT, text_cutoff),
        ("runsDeleted", "deleted", "job_runs", cleanup_db.OLD_RUNS, history_cutoff),
    )
    for key, what, table, purge, cutoff in steps:
        if ctx.should_stop() or result.fatal:
            break
        changed = await _walk(ctx, result, purge, cutoff, what=what, table=table)
        result.details[key] = changed
        if what == "deleted":
            result.count += changed
    return result


async def _dry_run(ctx: JobContext, result: JobResult, history_cutoff: datetime, text_cutoff: datetime) -> JobResult:
    """What a run would do now. The messages it would blank are those that stay: the blanking
    condition at the history's cutoff is exactly the messages deleted with something left to blank."""
    async with ctx.deps.db.connect() as conn:

        async def matching(purge: Purge, cutoff: datetime) -> int:
            return await cleanup_db.count_matching(conn, purge, cleanup_db.purge_params(cutoff))

        messages = await matching(cleanup_db.OLD_MESSAGES, history_cutoff)
        runs = await matching(cleanup_db.OLD_RUNS, history_cutoff)
        blanked = await matching(cleanup_db.MESSAGE_CONTENT, text_cutoff)
        blanked -= await matching(cleanup_db.MESSAGE_CONTENT, history_cutoff)
    result.count = messages + runs
    result.details.update(messagesDeleted=messages, messagesBlanked=blanked, runsDeleted=runs)
    return result


async def _walk(ctx: JobContext, result: JobResult, purge: Purge, cutoff: datetime, *, what: str, table: str) -> int:
    """One purge over its whole table, batch after batch."""
    deps = ctx.deps
    params = cleanup_db.purge_params(cutoff)
    changed = 0

    def counted(rows: int) -> None:
        nonlocal changed
        changed += rows
        result.details["batches"] += 1
        progress.count(what, rows)
        if what == "deleted":
            deps.metrics.rows_deleted.labels(job_name=JOB, table=table).inc(rows)

    try:
        await purge_in_batches(ctx, purge, params, on_batch=counted)
    except DatabaseError as exc:
        doing = "blanking messages in" if what == "blanked" else "deleting from"
        result.fail(f"{doing} {table} failed after {changed} rows: {exc}")
    return changed
