"""The deletions of the cleanup jobs: one predicate per table, deleted (or, for the daemon's own
messages, blanked) in short batches.

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

from scheduler.db.tables import OWN_SCHEMA
from scheduler.vocabulary import DeliveryStatus, RunStatus

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

    @classmethod
    def blanking(cls, table: str, condition: str, assignments: str) -> Purge:
        """Rows that are kept, but lose what `assignments` overwrites (counted as changed, not deleted)."""
        change = f"UPDATE {table} SET {assignments}"
        return cls(table, condition, _delete_batch_sql(table, condition, change), _count_sql(table, condition))


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    deleted: int  # rows deleted (or blanked)
    scanned: int  # rows that matched when the batch was chosen
    resume_after: tuple[int, int] | None  # the ctid to continue after, None when the table is done


def _delete_batch_sql(table: str, condition: str, change: str | None = None) -> TextClause:
    # `bound` finds where the next `batch_size` matching rows end; the DELETE then sweeps that
    # physical range, checking the condition again, so a row changed in between (marked unread,
    # say) is left alone. A lost cleanup batch is simply redone next time, so its commit does not
    # wait for the WAL flush (synchronous_commit is set for this transaction only).
    # A blanking purge updates instead; the new row versions it leaves later in the table no longer
    # meet the condition, so a later batch passes over them.
    change = change or f"DELETE FROM {table}"
    return text(
        f"""
        WITH bound AS MATERIALIZED (
            SELECT max(ctid) AS last_ctid, count(*) AS matched FROM (
                SELECT ctid FROM {table}
                WHERE ctid > CAST(:after AS tid) AND {condition}
                LIMIT :batch_size
            ) AS chosen
        ), deleted AS (
            {change}
            WHERE ctid > CAST(:after AS tid) AND ctid <= (SELECT last_ctid FROM bound) AND {condition}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM deleted) AS deleted,
               (SELECT matched FROM bound) AS scanned,
               (SELECT last_ctid FROM bound) AS last_ctid,
               set_config('synchronous_commit', 'off', true) AS commit_mode
        """
    )


async def delete_batch(
    conn: AsyncConnection, purge: Purge, params: dict[str, Any], *, after: tuple[int, int], batch_size: int
) -> BatchOutcome:
    """Delete up to `batch_size` matching rows found after `after`; the caller commits."""
    bind = {**params, "after": after, "batch_size": batch_size}
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
