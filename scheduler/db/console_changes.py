"""The operator's changes: which deliveries an id or a booking names, and the changes themselves
(resend, send again, cancel; pause and resume a job), one statement per command, never per row.

Apart from the reads (`console_queries.py`, `console_messages.py`) because these are the only
statements of the console that write: each runs in the command's transaction, on deliveries
locked first (`lock_messages`), and the daemon picks the result up like any other row (the
dispatcher re-checks a requeued message against its booking when it claims it). Plain SQL on the
console's asyncpg connection (see `console_sql.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from scheduler.db.console_messages import MESSAGE_COLUMNS, MessageRow, message_row
from scheduler.db.console_sql import SCHEMA as _S
from scheduler.db.console_sql import Where
from scheduler.vocabulary import DeliveryStatus

if TYPE_CHECKING:
    import asyncpg

CANCELLED_BY_OPERATOR = "cancelled by operator"
RESENT_BY_OPERATOR = "resent by operator"
RESEND_SUFFIX = ":resent"  # a forced resend's dedupe key: the original's and this, so once per original
RESENDABLE = (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED, DeliveryStatus.VOID)
CANCELLABLE = (DeliveryStatus.PENDING, DeliveryStatus.HELD)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Ids as an operator typed them (whole, or a prefix of 8+ hex digits) matched to deliveries."""

    ids: dict[str, UUID]  # token → the one delivery it names
    unknown: list[str]
    ambiguous: list[str]


_UUID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[0-9a-f]{8,32}")
MIN_PREFIX = 8


def id_range(token: str) -> tuple[UUID, UUID] | None:
    """The ids a token stands for, as a range of the primary key: a whole id, or a prefix of at
    least 8 hex digits (as the tables show them); None when it is neither."""
    digits = token.strip().lower().replace("-", "")
    if not _PREFIX.fullmatch(digits):
        return None
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


# At most two deliveries per token: one names it, two make it ambiguous.
_RESOLVE_SQL = f"""
    SELECT t.token, d.id FROM unnest(CAST($1 AS text[]), CAST($2 AS uuid[]), CAST($3 AS uuid[])) AS t(token, low, high)
    CROSS JOIN LATERAL (
        SELECT id FROM {_S}.deliveries WHERE id BETWEEN t.low AND t.high ORDER BY id LIMIT 2
    ) AS d
"""


async def resolve_ids(conn: asyncpg.Connection, tokens: Sequence[str]) -> Resolved:
    """Match each token (see `id_range`; callers have checked their shape) to its delivery."""
    ranges = {token: id_range(token) for token in tokens}
    valid = {token: bounds for token, bounds in ranges.items() if bounds is not None}
    found: dict[str, list[UUID]] = {}
    rows = await conn.fetch(
        _RESOLVE_SQL, list(valid), [low for low, _ in valid.values()], [high for _, high in valid.values()]
    )
    for row in rows:
        found.setdefault(row["token"], []).append(row["id"])
    return Resolved(
        ids={token: ids[0] for token, ids in found.items() if len(ids) == 1},
        unknown=[token for token in tokens if token not in found],
        ambiguous=[token for token, ids in found.items() if len(ids) > 1],
    )


_LOCK_SQL = f"SELECT {MESSAGE_COLUMNS}, body_text FROM {_S}.deliveries WHERE id = ANY(CAST($1 AS uuid[])) FOR UPDATE"


async def lock_messages(conn: asyncpg.Connection, ids: Sequence[UUID]) -> list[tuple[MessageRow, bool]]:
    """These deliveries as they stand, locked for the rest of the transaction; with whether they
    still hold their text (retention blanks the address and text of old ones)."""
    rows = await conn.fetch(_LOCK_SQL, list(ids))
    return [(message_row(row), bool(row["address"]) and bool(row["body_text"])) for row in rows]


async def booking_message_ids(
    conn: asyncpg.Connection, reference: str, *, kind: str | None, channel: str | None, latest_only: bool
) -> list[UUID]:
    """The booking's messages (of a kind, on a channel); with `latest_only`, the newest for each
    (kind, recipient, channel): the one a resend means, not those of an earlier event date."""
    where = Where()
    for column, value in (("booking_reference", reference), ("kind", kind), ("channel", channel)):
        where.equal(column, value)
    select = "SELECT DISTINCT ON (kind, recipient_role, channel) id" if latest_only else "SELECT id"
    order = "ORDER BY kind, recipient_role, channel, created_at DESC, id DESC" if latest_only else ""
    sql = f"{select} FROM {_S}.deliveries WHERE {where.sql} {order}"
    return [row["id"] for row in await conn.fetch(sql, *where.params)]


# Back to pending, due now, as a message never tried: its 24 hours of retries start afresh. The
# dispatcher re-checks it against its booking when it claims it, like any message.
_REQUEUE_SQL = f"""
    UPDATE {_S}.deliveries
    SET status = 'pending', next_attempt_at = $2, first_failed_at = NULL, claimed_by = NULL,
        lease_expires_at = NULL, updated_at = $2,
        -- --force of a message skipped for its suppressed address: this one is sent all the same
        suppression_overridden = suppression_overridden OR ($3 AND status = 'skipped' AND last_error = 'suppressed'),
        last_error = '{RESENT_BY_OPERATOR}; was ' || status || coalesce(': ' || last_error, '')
    WHERE id = ANY(CAST($1 AS uuid[])) AND status IN ('failed', 'skipped', 'void')
    RETURNING id
"""
# A sent message sent again is a new delivery: the same message, pending, with a dedupe key of
# its own derived from the original's, so each original is sent again once however often the
# command is repeated (the copy can itself be sent again, as a copy of the copy).
_COPY_SQL = f"""
    WITH originals AS (
        SELECT d.*, gen_random_uuid() AS copy_id FROM {_S}.deliveries AS d
        WHERE d.id = ANY(CAST($1 AS uuid[])) AND d.status = 'sent'
    ), copies AS (
        INSERT INTO {_S}.deliveries (
            id, dedupe_key, booking_id, booking_reference, kind, event_date, recipient_role, channel,
            address, subject, body_text, body_html, content_sid, content_variables, status, attempts,
            next_attempt_at, last_error, created_at, updated_at)
        SELECT copy_id, dedupe_key || '{RESEND_SUFFIX}', booking_id, booking_reference, kind, event_date,
               recipient_role, channel, address, subject, body_text, body_html, content_sid, content_variables,
               'pending', 0, $2, '{RESENT_BY_OPERATOR}: again after ' || id::text, $2, $2
        FROM originals
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id
    )
    SELECT originals.id AS original, copies.id AS copy FROM originals JOIN copies ON copies.id = originals.copy_id
"""
_COPIES_SQL = f"""
    SELECT o.id AS original, c.id AS copy FROM {_S}.deliveries AS o
    JOIN {_S}.deliveries AS c ON c.dedupe_key = o.dedupe_key || '{RESEND_SUFFIX}'
    WHERE o.id = ANY(CAST($1 AS uuid[]))
"""


async def requeue(conn: asyncpg.Connection, ids: Sequence[UUID], *, now: datetime, force: bool = False) -> list[UUID]:
    """Put failed, skipped and void deliveries back to pending; the ids that changed. `force`: one
    skipped because its address is suppressed is sent all the same."""
    if not ids:
        return []
    return [row["id"] for row in await conn.fetch(_REQUEUE_SQL, list(ids), now, force)]


async def send_again(conn: asyncpg.Connection, ids: Sequence[UUID], *, now: datetime) -> dict[UUID, UUID]:
    """Owe sent deliveries once more, each as a new delivery: original id → the new one's id.
    An original already sent again keeps its first copy (see `copies_of`)."""
    if not ids:
        return {}
    return {row["original"]: row["copy"] for row in await conn.fetch(_COPY_SQL, list(ids), now)}


async def copies_of(conn: asyncpg.Connection, ids: Sequence[UUID]) -> dict[UUID, UUID]:
    """Original id → the delivery that sends it again, for those already sent again."""
    if not ids:
        return {}
    return {row["original"]: row["copy"] for row in await conn.fetch(_COPIES_SQL, list(ids))}


_CANCEL_SQL = f"""
    UPDATE {_S}.deliveries
    SET status = 'void', last_error = '{CANCELLED_BY_OPERATOR}', claimed_by = NULL, lease_expires_at = NULL,
        updated_at = $2
    WHERE id = ANY(CAST($1 AS uuid[])) AND status IN ('pending', 'held')
    RETURNING id
"""


async def cancel(conn: asyncpg.Connection, ids: Sequence[UUID], *, now: datetime) -> list[UUID]:
    """Make pending and held deliveries void ('cancelled by operator'); the ids that changed."""
    if not ids:
        return []
    return [row["id"] for row in await conn.fetch(_CANCEL_SQL, list(ids), now)]


# The same rows as db/pauses.py writes (the daemon reads them there), on the console's connection.
_PAUSE_SQL = f"""
    INSERT INTO {_S}.job_pauses (job_name, reason, paused_by)
    SELECT job, $2, $3 FROM unnest(CAST($1 AS text[])) AS job
    ON CONFLICT DO NOTHING RETURNING job_name
"""
_RESUME_SQL = f"DELETE FROM {_S}.job_pauses WHERE job_name = ANY(CAST($1 AS text[])) RETURNING job_name"


async def pause(conn: asyncpg.Connection, jobs: Sequence[str], *, reason: str | None, by: str) -> list[str]:
    """Pause each job not paused yet; those that changed (a repeated pause keeps the first)."""
    return [row["job_name"] for row in await conn.fetch(_PAUSE_SQL, list(jobs), reason, by)]


async def resume(conn: asyncpg.Connection, jobs: Sequence[str]) -> list[str]:
    """Lift the pause of each job; those that were paused."""
    return [row["job_name"] for row in await conn.fetch(_RESUME_SQL, list(jobs))]
