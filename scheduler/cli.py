"""The command line (CONTRACT §3): parse flags, load settings once, configure logging, call the app.

Every failure ends as one line on stderr and an exit code: 0 success, 1 the job reported errors
or the database could not be reached, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TextIO

from scheduler.jobs.catalog import GROUPS, JOBS, resolve_target, schedule_for, valid_targets
from scheduler.limits import PRODUCTION, Limits
from scheduler.vocabulary import DeliveryStatus, JobName, MessageKind

if TYPE_CHECKING:  # the rest is imported where used: `--help` and `--list-jobs` stay quick
    from scheduler.app import App
    from scheduler.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flavor-scheduler"


class AppFactory(Protocol):
    """`app.build` with the timings of this program fixed."""

    def __call__(self, settings: Settings, *, demo: bool, transports: Any = None) -> App: ...


class UsageError(Exception):
    """Bad flags or values; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Version(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata is slow to load)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from scheduler import __version__

        parser.exit(message=f"{PROG} {__version__}\n")


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
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


_NO_DATABASE_URL = (
    "DATABASE_URL is not set: export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME "
    "(or DATABASE_URL_FILE=/path/to/file), or run with --demo to try it on an embedded database"
)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _console(args: argparse.Namespace, settings: Settings, limits: Limits) -> int:
    """A console command: no logging set up, no SQLAlchemy loaded, one connection (CONTRACT §3: 0.5 s)."""
    if settings.database_url is None:
        return _fail(_NO_DATABASE_URL, EXIT_USAGE)
    import asyncio

    from scheduler.console.run import run_console_command

    return asyncio.run(run_console_command(args, settings, limits))


def main(
    argv: Sequence[str] | None = None, *, limits: Limits = PRODUCTION, schedules: Mapping[JobName, str] | None = None
) -> int:
    """Entry point of the console script and `python -m scheduler`.

    `limits` and `schedules` replace the production timings and the settings' cron expressions
    (multi-process tests run the real program with second-long leases and schedules in seconds).
    """
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(given)
        if args.dry_run and not args.run_once:
            raise UsageError("--dry-run goes with --run-once JOB")
        modes = sum(bool(flag) for flag in (args.run_once, args.list_jobs, args.check, args.command))
        if modes > 1:
            raise UsageError("choose one of --run-once, --list-jobs, --check and a command")
        if args.run_once and resolve_target(args.run_once) is None:
            raise UsageError(f"unknown job {args.run_once!r}; valid names: {', '.join(valid_targets())}")
    except UsageError as exc:
        return _fail(f"{exc} (see --help)", EXIT_USAGE)

    from scheduler.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(f"configuration error: {exc}", EXIT_USAGE)
    if args.list_jobs:
        last_runs = _last_runs(settings, limits) if not args.demo else None
        print(list_jobs(settings, datetime.now(UTC), last_runs=last_runs))
        return EXIT_OK
    if args.command and not args.demo:
        return _console(args, settings, limits)
    from scheduler.logging import configure_logging

    configure_logging(
        level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values(), timezone=settings.tz
    )

    if not args.demo and settings.database_url is None:
        return _fail(_NO_DATABASE_URL, EXIT_USAGE)
    if not (args.run_once or args.check or args.list_jobs or args.command):
        from scheduler.ports import port_in_use

        if port_in_use(settings.http_host, settings.http_port):
            return _fail(f"HTTP_PORT {settings.http_port} is in use; set HTTP_PORT to a free port", EXIT_USAGE)
    import asyncio

    from scheduler.app import build

    make_app: AppFactory = partial(build, limits=limits, schedules=schedules)
    with _terminate_as_interrupt():
        try:
            if args.demo:
                return _with_demo(args, settings, make_app, limits)
            return asyncio.run(_command(args, settings, make_app, demo=False))
        except KeyboardInterrupt:
            return EXIT_OK if not args.run_once else EXIT_FAILED


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Outside the daemon, SIGTERM ends the program like Ctrl-C, so clean-up (the demo's server) runs."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _with_demo(args: argparse.Namespace, settings: Settings, make_app: AppFactory, limits: Limits) -> int:
    import asyncio

    from pydantic import SecretStr

    from scheduler.clock import SystemClock
    from scheduler.demo.embedded import EmbeddedPostgresMissing
    from scheduler.demo.guard import DemoAlreadyRunning
    from scheduler.demo.setup import demo_server, prepare_demo_database

    try:
        with demo_server() as database:
            demo_settings = settings.model_copy(update={"database_url": SecretStr(database.url)})

            async def go() -> int:
                fresh = database.owner and not (args.check or args.command)
                await prepare_demo_database(
                    database.url, SystemClock(), reseed=fresh, settings=demo_settings, limits=limits
                )
                if args.command:
                    from scheduler.console.run import run_console_command

                    await _demo_history(demo_settings, make_app, owner=database.owner)
                    return await run_console_command(args, demo_settings, limits)
                return await _command(args, demo_settings, make_app, demo=True)

            return asyncio.run(go())
    except (EmbeddedPostgresMissing, DemoAlreadyRunning) as exc:
        return _fail(str(exc), EXIT_USAGE)


async def _demo_history(settings: Settings, make_app: AppFactory, *, owner: bool) -> None:
    """The demo's database migrated; when this process runs its server and nothing ran there yet,
    the demo data laid and every job run once (messages printed on stderr), so the console has a
    history to show. A demo daemon running in this folder is left as it is."""
    from scheduler.clock import SystemClock
    from scheduler.db.runs import any_run
    from scheduler.demo.setup import prepare_demo_database
    from scheduler.demo.transports import demo_transports
    from scheduler.vocabulary import Trigger

    app = make_app(settings, demo=True, transports=demo_transports(sys.stderr))
    try:
        await app.prepare_database()
        if not owner:
            return
        async with app.db.connect() as conn:
            if await any_run(conn):
                return
        url = settings.async_database_url() or ""
        await prepare_demo_database(url, SystemClock(), reseed=True, settings=settings, limits=app.limits)
        for job in GROUPS["all"]:
            await app.runner.run(job, trigger=Trigger.MANUAL, dry_run=False)
    finally:
        await app.aclose()


async def _fetch_last_runs(settings: Settings, limits: Limits) -> dict[str, Any] | None:
    """Each job's last finished run and pause, or None when the database does not answer quickly."""
    from scheduler.db import console_queries, direct
    from scheduler.db.errors import DatabaseError

    try:
        async with direct.connect(
            settings.async_database_url() or "",
            connect_timeout_seconds=limits.list_jobs_connect_timeout_seconds,
            command_timeout_seconds=limits.list_jobs_connect_timeout_seconds,
        ) as conn:
            if await console_queries.schema_revision(conn) is None:
                return None
            return dict(await console_queries.job_overview(conn, [job.value for job in JOBS]))
    except (DatabaseError, TimeoutError) as exc:
        print(f"{PROG}: last runs not shown: {exc}", file=sys.stderr)
        return None


def _last_runs(settings: Settings, limits: Limits) -> dict[str, Any] | None:
    if settings.database_url is None:
        return None
    import asyncio

    return asyncio.run(_fetch_last_runs(settings, limits))


async def _command(args: argparse.Namespace, settings: Settings, make_app: AppFactory, *, demo: bool) -> int:
    import asyncio

    if args.check:
        from scheduler.check import run_checks

        return await run_checks(settings, demo=demo)
    # The demo prints its messages: on stdout for the daemon, on stderr where stdout is the result JSON.
    messages: TextIO = sys.stderr if args.run_once else sys.stdout
    transports = None
    if demo:
        from scheduler.demo.transports import demo_transports

        transports = demo_transports(messages)
    app = make_app(settings, demo=demo, transports=transports)
    try:
        if args.run_once:
            return await run_once(app, args.run_once, dry_run=args.dry_run)
        from scheduler.daemon import Daemon

        daemon = Daemon(app, demo=demo)
        if demo:
            from scheduler.demo.banner import announce_when_ready

            announcing = asyncio.create_task(announce_when_ready(app, messages), name="demo_banner")
        try:
            return await daemon.run()
        finally:
            if demo:
                announcing.cancel()
    finally:
        await app.aclose()


async def run_once(app: App, target: str, *, dry_run: bool) -> int:
    """Run a job or group now and print its result JSON on stdout."""
    from scheduler.db.errors import DatabaseError, explain_connect_error
    from scheduler.db.platform import PlatformSchemaError
    from scheduler.jobs.report import group_json, result_json
    from scheduler.jobs.result import JobResult
    from scheduler.redact import redact_text
    from scheduler.vocabulary import Trigger

    jobs = resolve_target(target)
    if jobs is None:
        return _fail(f"unknown job {target!r}; valid names: {', '.join(valid_targets())}", EXIT_USAGE)
    try:
        await app.prepare_database()
    except PlatformSchemaError as exc:
        return _fail(f"platform schema problem: {exc}", EXIT_FAILED)
    except DatabaseError as exc:
        failure = explain_connect_error(exc.__cause__ or exc, app.settings.async_database_url() or "")
        problem = failure.message if failure is not None else str(exc)
        what = "cannot connect to the database" if failure is not None and failure.fatal else "database unreachable"
        return _fail(f"{what}: {redact_text(problem, app.settings.secret_values())}", EXIT_FAILED)
    from scheduler.progress import watched_by
    from scheduler.progress_bar import terminal_watcher

    started = app.clock.now()
    results: list[JobResult] = []
    with _stop_on_signals(app), watched_by(terminal_watcher()):  # a bar on a terminal's stderr, else none
        for job in jobs:
            if results and app.lifecycle.stopping:
                break
            results.append(await app.runner.run(job, trigger=Trigger.MANUAL, dry_run=dry_run))
    secrets = app.settings.secret_values()
    for result in results:
        result.errors = [redact_text(error, secrets) for error in result.errors]
    body = group_json(target, results, started) if target in GROUPS else result_json(results[0])
    print(json.dumps(body, ensure_ascii=False, default=str))
    interrupted = app.lifecycle.stopping
    return EXIT_OK if all(result.success for result in results) and not interrupted else EXIT_FAILED


@contextlib.contextmanager
def _stop_on_signals(app: App) -> Iterator[None]:
    """SIGINT/SIGTERM during --run-once: stop after the item in hand; the runner hands back the
    run's lease and the dispatcher the messages it had claimed, at once, and the result so far is
    printed with `"interrupted": true`. A second signal ends the program at once."""
    import asyncio

    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        if not app.lifecycle.request_stop():
            raise KeyboardInterrupt
        print(f"{PROG}: {signal.Signals(signum).name}: stopping after the item in hand", file=sys.stderr)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def list_jobs(settings: Settings, now: datetime, *, last_runs: Mapping[str, Any] | None = None) -> str:
    """A table: job, schedule, time zone, enabled, next run (in the configured zone); with the
    database's answer (`last_runs`), also each job's last run, its outcome and whether it is paused."""
    from scheduler.cron import OFF
    from scheduler.triggers import build_trigger

    header = ("JOB", "SCHEDULE", "TIMEZONE", "ENABLED", "NEXT RUN")
    rows = [header + (("LAST RUN", "OUTCOME", "PAUSED") if last_runs is not None else ())]
    for job in JOBS:
        expression = schedule_for(settings, job)
        if expression == OFF:
            row: tuple[str, ...] = (job.value, OFF, settings.timezone, "no", "-")
        else:
            next_fire = build_trigger(expression, settings.tz).get_next_fire_time(None, now.astimezone(settings.tz))
            row = (job.value, expression, settings.timezone, "yes", next_fire.isoformat() if next_fire else "-")
        if last_runs is not None:
            overview = last_runs[job.value]
            last = overview.last
            row += (
                (last.finished_at or last.started_at).astimezone(settings.tz).isoformat(timespec="seconds")
                if last
                else "never",
                last.status if last else "-",
                "yes" if overview.pause else "no",
            )
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
