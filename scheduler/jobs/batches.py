"""One purge walked over its whole table: batch after batch of at most DELETE_BATCH_SIZE rows,
each its own short transaction, all on one connection (no pool round trip per batch). Shared by
the platform's cleanups and the daemon's own (`cleanup_scheduler_history`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.db import cleanup as cleanup_db
from scheduler.db.cleanup import Purge
from scheduler.jobs.batch_ranges import BatchRanges
from scheduler.jobs.context import JobContext


async def purge_in_batches(
    ctx: JobContext, purge: Purge, params: dict[str, Any], *, on_batch: Callable[[int], None]
) -> None:
    """Run `purge` until its table is done or the run is asked to stop; `on_batch(rows)` after
    each committed batch, so a failure part-way (DatabaseError, raised) leaves the count so far."""
    batch_size = ctx.deps.settings.delete_batch_size
    async with ctx.deps.db.connect() as conn:
        async with conn.begin():
            ranges = BatchRanges(batch_size, await cleanup_db.table_shape(conn, purge))
        while not ranges.done and not ctx.should_stop():
            stop = ranges.sized_stop()
            if stop is not None:
                async with conn.begin() as transaction:
                    changed = await cleanup_db.change_range(conn, purge, params, start=ranges.start, stop=stop)
                    if changed > batch_size:
                        await transaction.rollback()
                        ranges.overfull()
                        continue
                ranges.took_sized(stop, changed)
            else:
                async with conn.begin():
                    batch = await cleanup_db.exact_batch(conn, purge, params, start=ranges.start, batch_size=batch_size)
                ranges.took_exact(batch)
                changed = batch.changed
            on_batch(changed)
