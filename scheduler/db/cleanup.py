"""The deletions of the cleanup jobs: one predicate per table, deleted (or, for the daemon's own
messages, blanked) in short batches.

Each batch is a physical range of the table (a TID range scan), so a batch never rescans the dead
rows earlier batches left behind, and nothing but a row count comes back to Python. How a range
is chosen so that it holds at most DELETE_BATCH_SIZE rows is `jobs/batch_ranges.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.tables import OWN_SCHEMA
from scheduler.vocabulary import DeliveryStatus, RunStatus

Tid = tuple[int, int]  # a ctid: (block, line); the first row of a table is (0, 1)
START_OF_TABLE: Tid = (0, 0)


@dataclass(frozen=True, slots=True)
class Purge:
    """What one cleanup deletes: a table, the condition its rows must meet, and the statements
    written from them once, at import (a table name cannot be a bind parameter)."""

    table: str
    condition: str
    exact_batch: TextClause
    change_range: TextClause
    count: TextClause

    @classmethod
    def of(cls, table: str, condition: str) -> Purge:
        return cls._written(table, condition, f"DELETE FROM {table}")

    @classmethod
    def blanking(cls, table: str, condition: str, assignments: str) -> Purge:
        """Rows that are kept, but lose what `assignments` overwrites (counted as changed, not deleted)."""
        return cls._written(table, condition, f"UPDATE {table} SET {assignments}")

    @classmethod
    def _written(cls, table: str, condition: str, change: str) -> Purge:
        return cls(
            table,
            condition,
            _exact_batch_sql(table, condition, change),
            _change_range_sql(condition, change),
            text(f"SELECT count(*) FROM {table} WHERE {condition}"),
        )


@dataclass(frozen=True, slots=True)
class TableShape:
    """How big a table is, read once before its walk: where the walk may size ranges by density,
    and how many rows a block holds (None when the table was never analysed)."""

    blocks: int
    rows_per_block: float | None


@dataclass(frozen=True, slots=True)
class ExactBatch:
    """A batch whose range was found by scanning for the next `batch_size` matching rows."""

    changed: int  # rows deleted (or blanked)
    matched: int  # rows that matched when the range was chosen (fewer than asked: the table is done)
    last: Tid | None  # the last of them; None when none matched


def _exact_batch_sql(table: str, condition: str, change: str) -> TextClause:
    # `bound` finds where the next `batch_size` matching rows end; the change then sweeps that
    # range in the same snapshot, checking the condition again, so a row changed in between
    # (marked unread, say) is left alone. Two scans of the range: `jobs/batch_ranges.py` says when
    # the walk takes one instead.
    return text(
        f"""
        WITH bound AS MATERIALIZED (
            SELECT max(ctid) AS last, count(*) AS matched FROM (
                SELECT ctid FROM {table}
                WHERE ctid >= CAST(:start AS tid) AND {condition}
                LIMIT :batch_size
            ) AS chosen
        ), changed AS (
            {change}
            WHERE ctid >= CAST(:start AS tid) AND ctid <= (SELECT last FROM bound) AND {condition}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM changed) AS changed,
               (SELECT matched FROM bound) AS matched,
               (SELECT last FROM bound) AS last,
               set_config('synchronous_commit', 'off', true) AS commit_mode
        """
    )


def _change_range_sql(condition: str, change: str) -> TextClause:
    # A range sized by density, changed in one scan. No RETURNING: the command's row count is all
    # that comes back (RETURNING costs about a third more per row). A lost cleanup batch is simply
    # redone next time, so its commit does not wait for the WAL flush: the uncorrelated sub-select
    # is evaluated once, before the scan, and sets synchronous_commit for this transaction only,
    # in the statement's own round trip.
    # A blanking purge updates instead; the new row versions it leaves no longer meet the
    # condition, so a later range passes over them.
    return text(
        f"""
        {change}
        WHERE ctid >= CAST(:start AS tid) AND ctid < CAST(:stop AS tid) AND {condition}
          AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
        """
    )


async def table_shape(conn: AsyncConnection, purge: Purge) -> TableShape:
    """The table's size now, and its rows per block as of its last ANALYZE (or autovacuum)."""
    row = (
        await conn.execute(
            text(
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int AS blocks, "
                "CASE WHEN c.reltuples > 0 AND c.relpages > 0 THEN c.reltuples / c.relpages END AS rows_per_block "
                "FROM pg_class c WHERE c.oid = CAST(:table AS regclass)"
            ),
            {"table": purge.table},
        )
    ).one()
    rows_per_block = None if row.rows_per_block is None else float(row.rows_per_block)
    return TableShape(blocks=int(row.blocks), rows_per_block=rows_per_block)


async def exact_batch(
    conn: AsyncConnection, purge: Purge, params: dict[str, Any], *, start: Tid, batch_size: int
) -> ExactBatch:
    """Delete (or blank) the next `batch_size` matching rows from `start` on; the caller commits."""
    row = (await conn.execute(purge.exact_batch, {**params, "start": start, "batch_size": batch_size})).one()
    last = None if row.last is None else tuple(row.last)
    return ExactBatch(changed=int(row.changed), matched=int(row.matched), last=last)


async def change_range(conn: AsyncConnection, purge: Purge, params: dict[str, Any], *, start: Tid, stop: Tid) -> int:
    """Delete (or blank) the matching rows from `start` up to, not including, `stop`; the caller
    commits or, when they are more than a batch, rolls back."""
    result: CursorResult[Any] = await conn.execute(purge.change_range, {**params, "start": start, "stop": stop})
    return int(result.rowcount)


async def count_matching(conn: AsyncConnection, purge: Purge, params: dict[str, Any]) -> int:
    """How many rows the purge would delete now (the dry run)."""
    return int(await conn.scalar(purge.count, params) or 0)


READ_NOTIFICATIONS = Purge.of("notifications", "is_read AND created_at < :cutoff")
EXPIRED_OTPS = Purge.of("otp_codes", "expires_at < :cutoff")
OLD_AUDIT_LOGS = Purge.of(
    "audit_logs",
    '"timestamp" < :cutoff AND (event_type IS NULL OR NOT (event_type = ANY(CAST(:keep AS text[]))))',
)


# The daemon's own data (cleanup_scheduler_history). A run in progress is never deleted, nor a
# message still owed; a settled message's "settled at" is its last change (updated_at: a provider's
# later status moves it on).
SETTLED_DELIVERIES = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED, DeliveryStatus.VOID)
_SETTLED = ", ".join(f"'{status.value}'" for status in SETTLED_DELIVERIES)
OLD_RUNS = Purge.of(
    f"{OWN_SCHEMA}.job_runs",
    f"status <> '{RunStatus.RUNNING.value}' AND coalesce(finished_at, started_at) < :cutoff",
)
OLD_MESSAGES = Purge.of(f"{OWN_SCHEMA}.deliveries", f"status IN ({_SETTLED}) AND updated_at < :cutoff")
# Address and text go; the row, its status, booking reference, provider id and reason stay for the
# history. The condition names what is still there, so a blanked row is never counted again.
MESSAGE_CONTENT = Purge.blanking(
    f"{OWN_SCHEMA}.deliveries",
    f"status IN ({_SETTLED}) AND updated_at < :cutoff AND (address IS NOT NULL OR body_text <> '' "
    "OR subject IS NOT NULL OR body_html IS NOT NULL OR content_variables IS NOT NULL)",
    "address = NULL, subject = NULL, body_text = '', body_html = NULL, content_variables = NULL",
)


def purge_params(cutoff: datetime, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The bind parameters every purge condition uses."""
    return {"cutoff": cutoff, "keep": list(keep)}
