"""The command line (CONTRACT §3): parse flags, load settings once, configure logging, call the app.

Every failure ends as one line on stderr and an exit code: 0 success, 1 the job reported errors
or the database could not be reached, 2 usage or configuration error. The flags are
`cli_parser.py`'s, `--list-jobs` is `cli_list_jobs.py` and `--run-once` is `cli_run_once.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from scheduler.cli_exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from scheduler.cli_parser import UsageError, parse_args
from scheduler.jobs.catalog import GROUPS
from scheduler.limits import PRODUCTION, Limits
from scheduler.vocabulary import JobName

if TYPE_CHECKING:  # the rest is imported where used: `--help` and `--list-jobs` stay quick
    from scheduler.app import App
    from scheduler.settings import Settings


class AppFactory(Protocol):
    """`app.build` with the timings of this program fixed."""

    def __call__(self, settings: Settings, *, demo: bool, transports: Any = None) -> App: ...


_NO_DATABASE_URL = (
    "DATABASE_URL is not set: export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME "
    "(or DATABASE_URL_FILE=/path/to/file), or run with --demo to try it on an embedded database"
)


def _console(args: argparse.Namespace, settings: Settings, limits: Limits) -> int:
    """A console command: no logging set up, no SQLAlchemy loaded, one connection (CONTRACT §3: 0.5 s)."""
    if settings.database_url is None:
        return fail(_NO_DATABASE_URL, EXIT_USAGE)
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
        args = parse_args(given)
    except UsageError as exc:
        return fail(f"{exc} (see --help)", EXIT_USAGE)

    from scheduler.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return fail(f"configuration error: {exc}", EXIT_USAGE)
    if args.list_jobs:
        from scheduler.cli_list_jobs import list_jobs, read_last_runs

        last_runs = read_last_runs(settings, limits) if not args.demo else None
        print(list_jobs(settings, datetime.now(UTC), last_runs=last_runs))
        return EXIT_OK
    if args.command and not args.demo:
        return _console(args, settings, limits)
    from scheduler.logging import configure_logging

    configure_logging(
        level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values(), timezone=settings.tz
    )

    if not args.demo and settings.database_url is None:
        return fail(_NO_DATABASE_URL, EXIT_USAGE)
    if not (args.run_once or args.check or args.list_jobs or args.command):
        from scheduler.ports import port_in_use

        if port_in_use(settings.http_host, settings.http_port):
            return fail(f"HTTP_PORT {settings.http_port} is in use; set HTTP_PORT to a free port", EXIT_USAGE)
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
        return fail(str(exc), EXIT_USAGE)


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
            from scheduler.cli_run_once import run_once

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
