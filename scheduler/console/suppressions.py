"""`flavor-scheduler suppressions [--json]` and `suppressions lift ADDRESS`: the addresses no
message goes to (bounced, complained, opted out), masked, and an operator lifting one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.addresses import address_hash, kind_of_address, masked, normalised
from scheduler.console.answer import Answer, ConsoleUsageError, Context
from scheduler.console.changes import _change_answer
from scheduler.console.documents import iso
from scheduler.console.reads import _limit
from scheduler.db import console_suppressions as queries
from scheduler.phones import InvalidPhoneNumber

if TYPE_CHECKING:
    import asyncpg
    from rich.console import Console

LIFT = "lift"


def check_suppressions_arguments(args: Any) -> None:
    """`suppressions` lists; `suppressions lift ADDRESS` lifts (exit 2 otherwise)."""
    if args.action is None and args.address is None:
        return
    if args.action != LIFT or not args.address:
        raise ConsoleUsageError("suppressions: list them, or `suppressions lift ADDRESS`")
    try:
        normalised(args.address, kind_of_address(args.address))
    except InvalidPhoneNumber:
        raise ConsoleUsageError("suppressions lift: ADDRESS is an email address or a phone number") from None


def _document(row: queries.SuppressionRow) -> dict[str, Any]:
    return {
        "address": row.masked_address,
        "kind": row.kind,
        "reason": row.reason,
        "source": row.source,
        "detail": row.detail,
        "providerId": row.provider_id,
        "suppressedAt": iso(row.suppressed_at),
        "addressHash": row.address_hash,
    }


async def suppressions(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """List the suppressed addresses, or lift one."""
    if ctx.args.action == LIFT:
        return await _lift(conn, ctx)
    found = [_document(row) for row in await queries.list_suppressions(conn, limit=_limit(ctx))]

    def draw(console: Console) -> None:
        from scheduler.console.tables import print_suppressions

        print_suppressions(console, found, ctx.tz)

    return Answer({"suppressions": found}, draw)


async def _lift(conn: asyncpg.Connection, ctx: Context) -> Answer:
    kind = kind_of_address(ctx.args.address)
    shown = masked(normalised(ctx.args.address, kind), kind)
    async with conn.transaction():
        lifted = await queries.lift(conn, address_hash(ctx.args.address, kind))
    if lifted is None:
        return _change_answer([], [], [f"{shown} is not suppressed"], "")
    done = (
        f"lifted: {lifted.masked_address} (was {lifted.reason}, {lifted.source})\n"
        "Later messages reach it again; one skipped before goes out only if resent (`resend ID`)."
    )
    return _change_answer([lifted.masked_address], [], [], done)
