"""The deletions of the cleanup jobs: one predicate per table, deleted in short batches.

Each batch walks the table in physical order (a TID range scan from where the previous batch
stopped), so a batch never rescans the dead rows earlier batches left behind, and nothing but
two numbers comes back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.db.engine import idle_in_transaction_timeout

START_OF_TABLE: tuple[int, int] = (0, 0)  # a ctid: (block, line); the first row is (0, 1)


@dataclass(frozen=True, slots=True)
class Purge:
    """What one cleanup deletes: a table, the condition its rows must meet, and the two statements
    written from them once, at import (a table name cannot be a bind parameter)."""

    table: str
    condition: str
    delete_batch: TextClause
    count: TextClause

    @classmethod
    def of(cls, table: str, condition: str) -> Purge:
        return cls(table, condition, _delete_batch_sql(table, condition), _count_sql(table, condition))


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    deleted: int
    scanned: int  # rows that matched when the batch was chosen
    resume_after: tuple[int, int] | None  # the ctid to continue after, None when the table is done


def _delete_batch_sql(table: str, condition: str) -> TextClause:
    # `bound` finds where the next `batch_size` matching rows end; the DELETE then sweeps that
    # physical range, checking the condition again, so a row changed in between (marked unread,
    # say) is left alone. A lost cleanup batch is simply redone next time, so its commit does not
    # wait for the WAL flush (synchronous_commit is set for this transaction only); and if our
    # side of the connection is lost before the commit, PostgreSQL ends the transaction after
    # IDLE_IN_TRANSACTION_TIMEOUT_SECONDS instead of keeping the deleted rows locked.
    return text(
        f"""
        WITH bound AS MATERIALIZED (
            SELECT max(ctid) AS last_ctid, count(*) AS matched FROM (
                SELECT ctid FROM {table}
                WHERE ctid > CAST(:after AS tid) AND {condition}
                LIMIT :batch_size
            ) AS chosen
        ), deleted AS (
            DELETE FROM {table}
            WHERE ctid > CAST(:after AS tid) AND ctid <= (SELECT last_ctid FROM bound) AND {condition}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM deleted) AS deleted,
               (SELECT matched FROM bound) AS scanned,
               (SELECT last_ctid FROM bound) AS last_ctid,
               set_config('synchronous_commit', 'off', true) AS commit_mode,
               set_config('idle_in_transaction_session_timeout', :idle_timeout, true) AS idle_timeout
        """
    )


async def delete_batch(
    conn: AsyncConnection, purge: Purge, params: dict[str, Any], *, after: tuple[int, int], batch_size: int
) -> BatchOutcome:
    """Delete up to `batch_size` matching rows found after `after`; the caller commits."""
    bind = {**params, "after": after, "batch_size": batch_size, "idle_timeout": idle_in_transaction_timeout()}
    row = (await conn.execute(purge.delete_batch, bind)).one()
    done = row.scanned < batch_size
    return BatchOutcome(deleted=row.deleted, scanned=row.scanned, resume_after=None if done else tuple(row.last_ctid))


def _count_sql(table: str, condition: str) -> TextClause:
    return text(f"SELECT count(*) FROM {table} WHERE {condition}")


async def count_matching(conn: AsyncConnection, purge: Purge, params: dict[str, Any]) -> int:
    """How many rows the purge would delete now (the dry run)."""
    return int(await conn.scalar(purge.count, params) or 0)


READ_NOTIFICATIONS = Purge.of("notifications", "is_read AND created_at < :cutoff")
EXPIRED_OTPS = Purge.of("otp_codes", "expires_at < :cutoff")
OLD_AUDIT_LOGS = Purge.of(
    "audit_logs",
    '"timestamp" < :cutoff AND (event_type IS NULL OR NOT (event_type = ANY(CAST(:keep AS text[]))))',
)


def purge_params(cutoff: datetime, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The bind parameters every purge condition uses."""
    return {"cutoff": cutoff, "keep": list(keep)}
