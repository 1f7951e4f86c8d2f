"""The command line's flags and the operator's console sub-commands (CONTRACT §3), and which of
them go together: everything `--help` shows, kept apart from what the commands do."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from scheduler import __version__
from scheduler.cli_exits import PROG
from scheduler.jobs.catalog import GROUPS, JOBS, resolve_target, valid_targets
from scheduler.vocabulary import DeliveryStatus, MessageKind


class UsageError(Exception):
    """Bad flags or values; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The flags given, checked together; raises UsageError."""
    args = build_parser().parse_args(argv)
    if args.dry_run and not args.run_once:
        raise UsageError("--dry-run goes with --run-once JOB")
    modes = sum(bool(flag) for flag in (args.run_once, args.list_jobs, args.check, args.command))
    if modes > 1:
        raise UsageError("choose one of --run-once, --list-jobs, --check and a command")
    if args.run_once and resolve_target(args.run_once) is None:
        raise UsageError(f"unknown job {args.run_once!r}; valid names: {', '.join(valid_targets())}")
    return args


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, the console's sub-commands included."""
    parser = _Parser(
        prog=PROG,
        description="Background jobs of the Flavor Entertainers platform: nightly cleanups, hourly reminders.",
        epilog=f"Jobs: {', '.join(job.value for job in JOBS)}. Groups: {', '.join(GROUPS)}.",
    )
    parser.add_argument("--run-once", metavar="JOB", help="run one job or group now, print its result as JSON, exit")
    parser.add_argument("--dry-run", action="store_true", help="with --run-once: report, change nothing, send nothing")
    parser.add_argument("--list-jobs", action="store_true", help="list jobs, schedules and next run times")
    parser.add_argument("--check", action="store_true", help="check settings, database and provider credentials")
    parser.add_argument("--demo", action="store_true", help="use an embedded PostgreSQL with demo data; print messages")
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version and exit"
    )
    _console_parsers(parser)
    return parser


def _console_parsers(parser: argparse.ArgumentParser) -> None:
    """The operator's console: one sub-command each (CONTRACT §3); each takes --json and --demo."""
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, title="operator's console (DATABASE_URL or --demo)"
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout instead of tables")
        sub.add_argument("--demo", action="store_true", default=argparse.SUPPRESS, help="on the demo's database")
        return sub

    def listing(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--since", metavar="WHEN", help="30m, 6h, 2d, 1w, today, yesterday, or a date and time")
        sub.add_argument("--limit", metavar="N", help="at most N rows (default 50)")

    command("status", "every job (schedule, paused, running, last and next run) and the message backlog")
    runs = command("runs", "the run history of every replica and every manual run, newest first")
    runs.add_argument("job", nargs="?", metavar="JOB", help="only this job")
    runs.add_argument("--failed", action="store_true", help="only runs whose outcome is partial or error")
    listing(runs)
    messages = command("messages", "messages owed, newest first; --booking REF: that booking's whole trail")
    messages.add_argument("--booking", metavar="REF", help="the booking's reference, e.g. FE-2026-0042")
    messages.add_argument("--status", choices=[status.value for status in DeliveryStatus])
    messages.add_argument("--channel", metavar="C", help="whatsapp, email, ...")
    listing(messages)
    for name, help_text in (
        ("resend", "failed, skipped or void messages back to pending; sent ones again (--force) as new messages"),
        ("cancel", "pending or held messages made void (cancelled by operator): never sent"),
    ):
        sub = command(name, help_text)
        sub.add_argument("ids", nargs="*", metavar="ID", help="message ids (or their first 8+ characters)")
        sub.add_argument("--booking", metavar="REF", help="the booking's messages instead of ids")
        sub.add_argument("--kind", choices=[kind.value for kind in MessageKind], help="with --booking")
        sub.add_argument("--channel", metavar="C", help="with --booking")
        if name == "resend":
            sub.add_argument(
                "--force", action="store_true",
                help="also messages already sent, as new messages; and skipped ones to a suppressed address",
            )  # fmt: skip
    pause = command("pause", "stop a job's (or a group's) scheduled runs in every replica, without a restart")
    pause.add_argument("job", metavar="JOB")
    pause.add_argument("--reason", metavar="TEXT", help="shown by status")
    resume = command("resume", "restart a paused job's scheduled runs")
    resume.add_argument("job", metavar="JOB")
    suppressions = command("suppressions", "addresses no message goes to (bounced, complained, opted out); lift one")
    suppressions.add_argument("action", nargs="?", choices=["lift"], help="lift ADDRESS: let messages reach it again")
    suppressions.add_argument("address", nargs="?", metavar="ADDRESS", help="an email address or a phone number")
    suppressions.add_argument("--limit", metavar="N", help="at most N rows (default 50)")
