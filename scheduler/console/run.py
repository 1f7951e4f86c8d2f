"""Running one console command: connect, check the schema is there, run it, print its answer."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from scheduler.console.answer import EXIT_FAILED, EXIT_USAGE, Answer, ConsoleUsageError, Context
from scheduler.console.commands import COMMANDS
from scheduler.db import console_queries, direct
from scheduler.db.errors import DatabaseError, explain_connect_error
from scheduler.limits import Limits
from scheduler.redact import redact_text
from scheduler.settings import Settings

PROG = "flavor-scheduler"


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


async def run_console_command(args: Any, settings: Settings, limits: Limits) -> int:
    """Run `args.command`; its exit code (CONTRACT §3)."""
    from scheduler.console.commands import check_arguments

    now = datetime.now(UTC)
    try:
        check_arguments(args, now=now, tz=settings.tz)
    except ConsoleUsageError as exc:
        return _fail(f"{exc} (see {args.command} --help)", EXIT_USAGE)
    url = settings.async_database_url() or ""
    secrets = settings.secret_values()
    try:
        async with direct.connect(
            url,
            connect_timeout_seconds=limits.console_connect_timeout_seconds,
            command_timeout_seconds=limits.console_command_timeout_seconds,
        ) as conn:
            if await console_queries.schema_revision(conn) is None:
                return _fail(
                    "the daemon's schema flavor_scheduler is not in this database yet: start the daemon "
                    "(or run --check) once to create it",
                    EXIT_FAILED,
                )
            answer = await COMMANDS[args.command](conn, Context(settings, now, args))
    except DatabaseError as exc:
        failure = explain_connect_error(exc.__cause__ or exc, url)
        problem = failure.message if failure is not None else str(exc)
        return _fail(f"database unreachable: {redact_text(problem, secrets)}", EXIT_FAILED)
    _print(answer, as_json=args.json)
    return answer.code


def _print(answer: Answer, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.document, ensure_ascii=False))
    else:
        from rich.console import Console

        answer.draw(Console(soft_wrap=False, highlight=False))
    for note in answer.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    for problem in answer.problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
