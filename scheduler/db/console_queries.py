"""The operator's console's queries: what ran, what is owed, one booking's trail, and the few
changes an operator makes (resend, cancel, pause, resume).

They run on a plain asyncpg connection (`db/direct.py`): a console command must answer within
0.5 s, and loading SQLAlchemy alone takes longer. So the statements are SQL, composed only from
the constant fragments below (never from a value: every value is a bind parameter). Each reads a
few pages of an index of migration 0004_console (newest first, by status, by booking, the
backlog), never the whole history; each change is one statement per command, never one per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from scheduler.vocabulary import DeliveryStatus, RunStatus

if TYPE_CHECKING:
    import asyncpg

CANCELLED_BY_OPERATOR = "cancelled by operator"
RESENT_BY_OPERATOR = "resent by operator"
RESEND_SUFFIX = ":resent"  # a forced resend's dedupe key: the original's and this, so once per original
FAILED_RUNS = (RunStatus.PARTIAL, RunStatus.ERROR)
RESENDABLE = (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED, DeliveryStatus.VOID)
CANCELLABLE = (DeliveryStatus.PENDING, DeliveryStatus.HELD)
# tables.OWN_SCHEMA, which cannot be imported here without SQLAlchemy (a test keeps them equal).
_S = "flavor_scheduler"


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


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A delivery (one message to one recipient on one channel); `address` is as stored: mask it."""

    id: UUID
    booking_reference: str
    kind: str
    role: str
    channel: str
    address: str | None
    status: str
    reason: str | None
    attempts: int
    provider_id: str | None
    provider_status: str | None
    provider_error_code: str | None
    event_date: datetime | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    first_failed_at: datetime | None
    provider_status_at: datetime | None
    claimed_by: str | None


@dataclass(frozen=True, slots=True)
class BookingRow:
    id: UUID
    reference: str
    status: str | None
    payment_status: str | None
    event_date: datetime | None


@dataclass(frozen=True, slots=True)
class ReminderRow:
    """A row of the reminder ledger: the booking was reminded (`kind`) for this event date."""

    kind: str
    event_date: datetime
    recorded_at: datetime
    run_id: UUID | None


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """An in-app notification of the platform about the booking."""

    type: str | None
    role: str | None
    title: str | None
    is_read: bool | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    event_type: str | None
    action: str | None
    details: dict[str, Any]
    at: datetime | None


@dataclass(frozen=True, slots=True)
class BookingTrail:
    """Everything about one booking's messages: the booking as it stands, the reminders it was owed
    (per event date), its messages, its in-app notices and its audit rows, oldest first."""

    reference: str
    booking: BookingRow | None
    reminders: list[ReminderRow]
    messages: list[MessageRow]
    notices: list[NoticeRow]
    audit: list[AuditRow]


@dataclass(frozen=True, slots=True)
class Resolved:
    """Ids as an operator typed them (whole, or a prefix of 8+ hex digits) matched to deliveries."""

    ids: dict[str, UUID]  # token → the one delivery it names
    unknown: list[str]
    ambiguous: list[str]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


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
        counts=dict(_json(row["counts"]) or {}),
        errors=[str(error) for error in _json(row["errors"]) or []],
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


# Unfinished messages all told (a partial index: they are few), settled ones since `since`
# (a range per status of the by-status index, which carries the channel: no table pages read).
_BACKLOG_SQL = f"""
    SELECT channel, status, count(*) AS n FROM {_S}.deliveries
    WHERE status IN ('pending', 'held', 'sending') GROUP BY channel, status
    UNION ALL
    SELECT channel, status, count(*) AS n FROM {_S}.deliveries
    WHERE status IN ('sent', 'failed', 'skipped', 'void') AND created_at >= $1 GROUP BY channel, status
"""


async def message_backlog(conn: asyncpg.Connection, *, since: datetime) -> dict[str, dict[str, int]]:
    """`{channel: {status: count}}`: every unfinished message, and those settled that were owed since `since`."""
    counts: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(_BACKLOG_SQL, since):
        counts.setdefault(row["channel"], {})[row["status"]] = int(row["n"])
    return counts


async def list_runs(
    conn: asyncpg.Connection, *, job: str | None, failed: bool, since: datetime | None, limit: int
) -> list[RunRow]:
    """The run history of every replica and every trigger, newest first."""
    where, params = ["NOT dry_run"], list[Any]()
    if job is not None:
        params.append(job)
        where.append(f"job_name = ${len(params)}")
    if failed:
        where.append("status IN ('partial', 'error')")
    if since is not None:
        params.append(since)
        where.append(f"started_at >= ${len(params)}")
    params.append(limit)
    sql = (
        f"SELECT {_RUN_COLUMNS} FROM {_S}.job_runs WHERE {' AND '.join(where)} "
        f"ORDER BY started_at DESC, id DESC LIMIT ${len(params)}"
    )
    return [_run(row) for row in await conn.fetch(sql, *params)]


_MESSAGE_COLUMNS = """
    id, booking_reference, kind, recipient_role, channel, address, status, last_error, attempts,
    provider_message_id, provider_status, provider_error_code, event_date, created_at, updated_at,
    next_attempt_at, sent_at, first_failed_at, provider_status_at, claimed_by
"""


def _message(row: asyncpg.Record) -> MessageRow:
    return MessageRow(
        id=row["id"],
        booking_reference=row["booking_reference"],
        kind=row["kind"],
        role=row["recipient_role"],
        channel=row["channel"],
        address=row["address"],
        status=row["status"],
        reason=row["last_error"],
        attempts=row["attempts"],
        provider_id=row["provider_message_id"],
        provider_status=row["provider_status"],
        provider_error_code=row["provider_error_code"],
        event_date=row["event_date"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        first_failed_at=row["first_failed_at"],
        provider_status_at=row["provider_status_at"],
        claimed_by=row["claimed_by"],
    )


async def list_messages(
    conn: asyncpg.Connection,
    *,
    booking: str | None,
    status: str | None,
    channel: str | None,
    since: datetime | None,
    limit: int,
) -> list[MessageRow]:
    """Messages owed, newest first, filtered by booking reference, status, channel and age."""
    where, params = ["true"], list[Any]()
    for column, value in (("booking_reference", booking), ("status", status), ("channel", channel)):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    if since is not None:
        params.append(since)
        where.append(f"created_at >= ${len(params)}")
    params.append(limit)
    sql = (
        f"SELECT {_MESSAGE_COLUMNS} FROM {_S}.deliveries WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(params)}"
    )
    return [_message(row) for row in await conn.fetch(sql, *params)]


_BOOKING_SQL = (
    "SELECT id, booking_reference, status, payment_status, event_date FROM bookings WHERE booking_reference = $1"
)
_BOOKING_MESSAGES_SQL = (
    f"SELECT {_MESSAGE_COLUMNS}, booking_id FROM {_S}.deliveries WHERE booking_reference = $1 ORDER BY created_at, id"
)
_REMINDERS_SQL = (
    f"SELECT kind, event_date, recorded_at, run_id FROM {_S}.booking_reminders WHERE booking_id = $1 "
    "ORDER BY recorded_at, kind"
)
# The notices' recipients: the booking's client or performer, by their user id.
_NOTICES_SQL = """
    SELECT n.type, n.title, n.is_read, n.created_at,
           CASE WHEN n.user_id = c.user_id THEN 'client' WHEN n.user_id = p.user_id THEN 'performer' END AS role
    FROM notifications AS n
    LEFT JOIN bookings AS b ON b.id = n.booking_id
    LEFT JOIN clients AS c ON c.id = b.client_id
    LEFT JOIN performers AS p ON p.id = b.performer_id
    WHERE n.booking_id = $1
    ORDER BY n.created_at
"""
_AUDIT_SQL = (
    'SELECT event_type, action, details, "timestamp" FROM audit_logs WHERE booking_id = $1 ORDER BY "timestamp"'
)


async def booking_trail(conn: asyncpg.Connection, reference: str) -> BookingTrail:
    """One booking's whole trail. Found by reference in the platform's bookings (a unique index
    there), else through its messages (a booking deleted since)."""
    row = await conn.fetchrow(_BOOKING_SQL, reference)
    booking = (
        BookingRow(row["id"], row["booking_reference"], row["status"], row["payment_status"], row["event_date"])
        if row
        else None
    )
    message_rows = await conn.fetch(_BOOKING_MESSAGES_SQL, reference)
    booking_id = booking.id if booking else (message_rows[0]["booking_id"] if message_rows else None)
    reminders: list[ReminderRow] = []
    notices: list[NoticeRow] = []
    audit: list[AuditRow] = []
    if booking_id is not None:
        reminders = [
            ReminderRow(r["kind"], r["event_date"], r["recorded_at"], r["run_id"])
            for r in await conn.fetch(_REMINDERS_SQL, booking_id)
        ]
        notices = [
            NoticeRow(r["type"], r["role"], r["title"], r["is_read"], r["created_at"])
            for r in await conn.fetch(_NOTICES_SQL, booking_id)
        ]
        if await conn.fetchval("SELECT to_regclass('audit_logs') IS NOT NULL"):
            audit = [
                AuditRow(r["event_type"], r["action"], dict(_json(r["details"]) or {}), r["timestamp"])
                for r in await conn.fetch(_AUDIT_SQL, booking_id)
            ]
    return BookingTrail(reference, booking, reminders, [_message(r) for r in message_rows], notices, audit)


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


_LOCK_SQL = f"SELECT {_MESSAGE_COLUMNS}, body_text FROM {_S}.deliveries WHERE id = ANY(CAST($1 AS uuid[])) FOR UPDATE"


async def lock_messages(conn: asyncpg.Connection, ids: Sequence[UUID]) -> list[tuple[MessageRow, bool]]:
    """These deliveries as they stand, locked for the rest of the transaction; with whether they
    still hold their text (retention blanks the address and text of old ones)."""
    rows = await conn.fetch(_LOCK_SQL, list(ids))
    return [(_message(row), bool(row["address"]) and bool(row["body_text"])) for row in rows]


async def booking_message_ids(
    conn: asyncpg.Connection, reference: str, *, kind: str | None, channel: str | None, latest_only: bool
) -> list[UUID]:
    """The booking's messages (of a kind, on a channel); with `latest_only`, the newest for each
    (kind, recipient, channel): the one a resend means, not those of an earlier event date."""
    params: list[Any] = [reference]
    where = ["booking_reference = $1"]
    for column, value in (("kind", kind), ("channel", channel)):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    select = "SELECT DISTINCT ON (kind, recipient_role, channel) id" if latest_only else "SELECT id"
    order = "ORDER BY kind, recipient_role, channel, created_at DESC, id DESC" if latest_only else ""
    sql = f"{select} FROM {_S}.deliveries WHERE {' AND '.join(where)} {order}"
    return [row["id"] for row in await conn.fetch(sql, *params)]


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


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    """The revision of our schema, or None when it was never migrated."""
    if not await conn.fetchval(f"SELECT to_regclass('{_S}.alembic_version') IS NOT NULL"):
        return None
    revision: str | None = await conn.fetchval(f"SELECT max(version_num) FROM {_S}.alembic_version")
    return revision
