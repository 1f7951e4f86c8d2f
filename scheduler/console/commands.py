"""The console's commands by name, and the check of their arguments before anything connects.

Each command reads (`reads.py`) or changes (`changes.py`) the daemon's tables over one
connection and answers with a JSON document (`--json`) or tables for a person, and an exit code
(0 done, 1 the database could not be reached or an id is unknown or a change was refused, 2 bad
usage); `run.py` runs one.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from scheduler.console import changes, reads, suppressions
from scheduler.console.answer import Command, ConsoleUsageError
from scheduler.db.console_changes import MIN_PREFIX, id_range
from scheduler.jobs.catalog import JOBS, resolve_target, valid_targets


def check_arguments(args: Any, *, now: datetime, tz: tzinfo) -> None:
    """Refuse bad values before connecting (exit 2); raises ConsoleUsageError."""
    from scheduler.console.when import BadValue, parse_limit, parse_since

    try:
        if getattr(args, "since", None):
            parse_since(args.since, now=now, tz=tz)
        if getattr(args, "limit", None):
            parse_limit(args.limit)
    except BadValue as exc:
        raise ConsoleUsageError(str(exc)) from None
    if args.command == "runs" and args.job is not None and args.job not in {job.value for job in JOBS}:
        raise ConsoleUsageError(f"unknown job {args.job!r}; valid names: {', '.join(job.value for job in JOBS)}")
    if args.command == "suppressions":
        from scheduler.console.suppressions import check_suppressions_arguments

        check_suppressions_arguments(args)
    if args.command in ("pause", "resume") and resolve_target(args.job) is None:
        raise ConsoleUsageError(f"unknown job {args.job!r}; valid names: {', '.join(valid_targets())}")
    if args.command in ("resend", "cancel"):
        if bool(args.ids) == bool(args.booking):
            raise ConsoleUsageError(f"{args.command}: give message ids, or --booking REF (not both)")
        if args.ids and (args.kind or args.channel):
            raise ConsoleUsageError(f"{args.command}: --kind and --channel go with --booking REF")
        bad = [token for token in args.ids if id_range(token) is None]
        if bad:
            raise ConsoleUsageError(
                f"{', '.join(map(repr, bad))}: a message id is a UUID or its first {MIN_PREFIX}+ hex digits"
            )


COMMANDS: dict[str, Command] = {
    "status": reads.status,
    "runs": reads.runs,
    "messages": reads.messages,
    "resend": changes.resend,
    "cancel": changes.cancel,
    "pause": changes.pause,
    "resume": changes.resume,
    "suppressions": suppressions.suppressions,
}
