"""Delivering what earlier runs could not: transient failures whose next attempt has come, and
messages left behind by a run that died."""

from __future__ import annotations

from datetime import datetime

from scheduler.db import outbox_counts
from scheduler.jobs.context import JobContext
from scheduler.jobs.result import JobResult
from scheduler.vocabulary import JobName


async def deliver_pending_messages(ctx: JobContext, now: datetime) -> JobResult:
    """Send every due pending delivery, oldest first."""
    result = JobResult(JobName.DELIVER_PENDING_MESSAGES, started_at=now, dry_run=ctx.dry_run)
    if ctx.dry_run:
        async with ctx.deps.db.connect() as conn:
            pending = await outbox_counts.unfinished_by_channel(conn)
        result.count = sum(pending.values())
        result.details["pending"] = pending
        return result
    report = await ctx.deps.dispatcher.deliver(should_stop=ctx.should_stop)
    result.count = report.sent
    result.errors += report.errors
    result.messages.update(report.states)
    result.details["deferred"] = report.retrying
    return result
