"""The command line (CONTRACT §3): parse flags, load settings once, configure logging, call the app.

Every failure ends as one line on stderr and an exit code: 0 success, 1 the job reported errors
or the database could not be reached, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, NoReturn, Protocol

from pydantic import SecretStr

from scheduler import __version__
from scheduler.app import App, build
from scheduler.clock import SystemClock
from scheduler.cron import OFF, build_trigger
from scheduler.db.errors import DatabaseError
from scheduler.db.platform import PlatformSchemaError
from scheduler.jobs.catalog import GROUPS, JOBS, resolve_target, schedule_for, valid_targets
from scheduler.jobs.report import group_json, result_json
from scheduler.jobs.result import JobResult
from scheduler.limits import PRODUCTION, Limits
from scheduler.logging import configure_logging
from scheduler.redact import redact_text
from scheduler.settings import Settings, SettingsError, load_settings
from scheduler.vocabulary import JobName, Trigger

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AppFactory(Protocol):
    """`app.build` with the timings of this program fixed."""

    def __call__(self, settings: Settings, *, demo: bool) -> App: ...
PROG = "flavor-scheduler"


class UsageError(Exception):
    """Bad flags or values; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(
    argv: Sequence[str] | None = None, *, limits: Limits = PRODUCTION, schedules: Mapping[JobName, str] | None = None
) -> int:
    """Entry point of the console script and `python -m scheduler`.

    `limits` and `schedules` replace the production timings and the settings' cron expressions
    (multi-process tests run the real program with second-long leases and schedules in seconds).
    """
    make_app = partial(build, limits=limits, schedules=schedules)
    try:
        args = _parser().parse_args(argv)
        if args.dry_run and not args.run_once:
            raise UsageError("--dry-run goes with --run-once JOB")
        modes = sum(bool(flag) for flag in (args.run_once, args.list_jobs, args.check))
        if modes > 1:
            raise UsageError("choose one of --run-once, --list-jobs and --check")
        if args.run_once and resolve_target(args.run_once) is None:
            raise UsageError(f"unknown job {args.run_once!r}; valid names: {', '.join(valid_targets())}")
    except UsageError as exc:
        return _fail(f"{exc} (see --help)", EXIT_USAGE)

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(f"configuration error: {exc}", EXIT_USAGE)
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values())

    if args.list_jobs:
        print(list_jobs(settings, SystemClock().now()))
        return EXIT_OK
    if not args.demo and settings.database_url is None:
        return _fail(
            "DATABASE_URL is not set: export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME "
            "(or DATABASE_URL_FILE=/path/to/file), or run with --demo to try it on an embedded database",
            EXIT_USAGE,
        )
    with _terminate_as_interrupt():
        try:
            if args.demo:
                return _with_demo(args, settings, make_app)
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


def _with_demo(args: argparse.Namespace, settings: Settings, make_app: AppFactory) -> int:
    from scheduler.demo.embedded import EmbeddedPostgresMissing
    from scheduler.demo.setup import demo_server, prepare_demo_database

    try:
        with demo_server() as url:
            demo_settings = settings.model_copy(update={"database_url": SecretStr(url)})

            async def go() -> int:
                await prepare_demo_database(url, SystemClock(), add_sample_round=not args.check)
                return await _command(args, demo_settings, make_app, demo=True)

            return asyncio.run(go())
    except EmbeddedPostgresMissing as exc:
        return _fail(str(exc), EXIT_USAGE)


async def _command(args: argparse.Namespace, settings: Settings, make_app: AppFactory, *, demo: bool) -> int:
    if args.check:
        from scheduler.check import run_checks

        return await run_checks(settings, demo=demo)
    app = make_app(settings, demo=demo)
    try:
        if args.run_once:
            return await run_once(app, args.run_once, dry_run=args.dry_run)
        from scheduler.daemon import run_daemon

        return await run_daemon(app, demo=demo)
    finally:
        await app.aclose()


async def run_once(app: App, target: str, *, dry_run: bool) -> int:
    """Run a job or group now and print its result JSON on stdout."""
    jobs = resolve_target(target)
    if jobs is None:
        return _fail(f"unknown job {target!r}; valid names: {', '.join(valid_targets())}", EXIT_USAGE)
    try:
        await app.prepare_database()
    except PlatformSchemaError as exc:
        return _fail(f"platform schema problem: {exc}", EXIT_FAILED)
    except DatabaseError as exc:
        return _fail(f"database unreachable: {redact_text(str(exc), app.settings.secret_values())}", EXIT_FAILED)
    started = app.clock.now()
    results: list[JobResult] = []
    for job in jobs:
        results.append(await app.runner.run(job, trigger=Trigger.MANUAL, dry_run=dry_run))
    secrets = app.settings.secret_values()
    for result in results:
        result.errors = [redact_text(error, secrets) for error in result.errors]
    body = group_json(target, results, started) if target in GROUPS else result_json(results[0])
    print(json.dumps(body, ensure_ascii=False, default=str))
    return EXIT_OK if all(result.success for result in results) else EXIT_FAILED


def list_jobs(settings: Settings, now: datetime) -> str:
    """A table: job, schedule, time zone, enabled, next run (in the configured zone)."""
    rows = [("JOB", "SCHEDULE", "TIMEZONE", "ENABLED", "NEXT RUN")]
    for job in JOBS:
        expression = schedule_for(settings, job)
        if expression == OFF:
            rows.append((job.value, OFF, settings.timezone, "no", "-"))
            continue
        next_fire = build_trigger(expression, settings.tz).get_next_fire_time(None, now.astimezone(settings.tz))
        rows.append((job.value, expression, settings.timezone, "yes", next_fire.isoformat() if next_fire else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
