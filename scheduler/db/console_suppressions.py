"""The console's queries on suppressed addresses (`flavor-scheduler suppressions`), on a plain
asyncpg connection like the rest of the console (db/console_queries.py): list them, lift one.
The address itself is never stored: a lift finds its entry by the hash of its normalised form."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

_S = "flavor_scheduler"  # tables.OWN_SCHEMA, which cannot be imported here without SQLAlchemy
_COLUMNS = "address_hash, address_kind, masked_address, reason, source, detail, provider_message_id, suppressed_at"


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    address_hash: str
    kind: str
    masked_address: str
    reason: str
    source: str
    detail: str | None
    provider_id: str | None
    suppressed_at: datetime


def _row(record: asyncpg.Record) -> SuppressionRow:
    return SuppressionRow(
        record["address_hash"], record["address_kind"], record["masked_address"], record["reason"],
        record["source"], record["detail"], record["provider_message_id"], record["suppressed_at"],
    )  # fmt: skip


async def list_suppressions(conn: asyncpg.Connection, *, limit: int) -> list[SuppressionRow]:
    """The suppressed addresses, newest first."""
    sql = f"SELECT {_COLUMNS} FROM {_S}.suppressions ORDER BY suppressed_at DESC, address_hash LIMIT $1"  # noqa: S608
    return [_row(record) for record in await conn.fetch(sql, limit)]


async def lift(conn: asyncpg.Connection, digest: str) -> SuppressionRow | None:
    """Remove the entry of the address hashed `digest`; the entry lifted, or None."""
    sql = f"DELETE FROM {_S}.suppressions WHERE address_hash = $1 RETURNING {_COLUMNS}"  # noqa: S608
    record = await conn.fetchrow(sql, digest)
    return None if record is None else _row(record)
