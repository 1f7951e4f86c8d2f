"""`flavor-scheduler suppressions [--json]` and `suppressions lift ADDRESS`: the addresses no
message goes to (bounced, complained, opted out), listed masked, and lifted by an operator.

Self-contained (its own flags, one small engine, no app), so it starts quickly like the other
console commands; exit 0 on success, 1 when the database cannot be reached or the address is not
suppressed, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from scheduler.db.suppressions import Suppression
    from scheduler.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flavor-scheduler suppressions"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The command's flags (also for the main parser's help)."""
    found = _Parser(prog=PROG, description="Addresses no message goes to: bounced, complained, opted out.")
    found.add_argument("--json", action="store_true", help="print one JSON document")
    actions = found.add_subparsers(dest="action", parser_class=_Parser)
    lift = actions.add_parser("lift", help="let messages reach ADDRESS again")
    lift.add_argument("address", metavar="ADDRESS", help="the email address or phone number, as written anywhere")
    lift.add_argument("--json", action="store_true", help="print one JSON document")
    return found


def main(argv: Sequence[str], *, out: Any = None) -> int:
    """Run the command; `argv` is what follows `suppressions`."""
    out = out or sys.stdout
    try:
        args = parser().parse_args(list(argv))
    except _UsageError as exc:
        print(f"{PROG}: {exc} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    from scheduler.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"flavor-scheduler: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.database_url is None:
        print("flavor-scheduler: DATABASE_URL is not set (or DATABASE_URL_FILE)", file=sys.stderr)
        return EXIT_USAGE
    import asyncio

    return asyncio.run(_run(args, settings, out))


async def _run(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    from scheduler.db import suppressions as suppressions_db
    from scheduler.db.database import Database, translated_errors
    from scheduler.db.engine import create_engine
    from scheduler.db.errors import DatabaseError
    from scheduler.phones import InvalidPhoneNumber
    from scheduler.redact import redact_text

    with translated_errors():
        db = Database(create_engine(settings.async_database_url() or "", pool_size=1))
    try:
        if args.action == "lift":
            try:
                async with db.begin() as conn:
                    lifted = await suppressions_db.lift(conn, args.address)
            except InvalidPhoneNumber:
                print(f"{PROG}: not an email address or a phone number", file=sys.stderr)
                return EXIT_USAGE
            if lifted is None:
                print(f"{PROG}: {redact_text(args.address)} is not suppressed", file=sys.stderr)
                return EXIT_FAILED
            if args.json:
                print(json.dumps({"changed": [lifted.masked_address]}), file=out)
            else:
                print(f"lifted {lifted.masked_address} (was {lifted.reason.value})", file=out)
            return EXIT_OK
        async with db.connect() as conn:
            found = await suppressions_db.list_suppressions(conn)
    except DatabaseError as exc:
        print(
            f"flavor-scheduler: database unreachable: {redact_text(str(exc), settings.secret_values())}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        await db.dispose()
    print(json.dumps({"suppressions": [_json(entry) for entry in found]}) if args.json else _table(found), file=out)
    return EXIT_OK


def _json(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.masked_address,
        "kind": entry.kind.value,
        "reason": entry.reason.value,
        "source": entry.source,
        "detail": entry.detail,
        "providerId": entry.provider_message_id,
        "suppressedAt": entry.suppressed_at.isoformat(),
        "addressHash": entry.address_hash,
    }


def _table(found: list[Suppression]) -> str:
    if not found:
        return "no suppressed addresses"
    rows = [("ADDRESS", "KIND", "REASON", "SOURCE", "DETAIL", "SINCE")]
    rows += [
        (
            e.masked_address,
            e.kind.value,
            e.reason.value,
            e.source,
            e.detail or "-",
            f"{e.suppressed_at:%Y-%m-%d %H:%M}Z",
        )
        for e in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
