"""One purge walked over its whole table: batch after batch of DELETE_BATCH_SIZE rows, each its
own short transaction, all on one connection (no pool round trip per batch). Shared by the
platform's cleanups and the daemon's own (`cleanup_scheduler_history`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.db import cleanup as cleanup_db
from scheduler.db.cleanup import START_OF_TABLE, Purge
from scheduler.jobs.context import JobContext


async def purge_in_batches(
    ctx: JobContext, purge: Purge, params: dict[str, Any], *, on_batch: Callable[[int], None]
) -> None:
    """Run `purge` until its table is done or the run is asked to stop; `on_batch(rows)` after
    each committed batch, so a failure part-way (DatabaseError, raised) leaves the count so far."""
    deps = ctx.deps
    after: tuple[int, int] | None = START_OF_TABLE
    async with deps.db.connect() as conn:
        while after is not None and not ctx.should_stop():
            async with conn.begin():
                outcome = await cleanup_db.delete_batch(
                    conn, purge, params, after=after, batch_size=deps.settings.delete_batch_size
                )
            on_batch(outcome.deleted)
            after = outcome.resume_after
