"""`--run-once JOB`: the database prepared, the job or group run through the runner (a bar on a
terminal), its result printed as JSON on stdout; a signal stops it after the item in hand."""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scheduler.cli_exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, fail
from scheduler.jobs.catalog import GROUPS, resolve_target, valid_targets

if TYPE_CHECKING:
    from datetime import datetime

    from scheduler.app import App
    from scheduler.jobs.result import JobResult


async def run_once(app: App, target: str, *, dry_run: bool) -> int:
    """Run a job or group now and print its result JSON on stdout."""
    from scheduler.db.errors import DatabaseError, explain_connect_error
    from scheduler.db.platform import PlatformSchemaError
    from scheduler.jobs.result import JobResult
    from scheduler.redact import redact_text
    from scheduler.vocabulary import Trigger

    jobs = resolve_target(target)
    if jobs is None:
        return fail(f"unknown job {target!r}; valid names: {', '.join(valid_targets())}", EXIT_USAGE)
    started = app.clock.now()
    try:
        await app.prepare_database()
    except (PlatformSchemaError, DatabaseError) as exc:
        if isinstance(exc, PlatformSchemaError):
            reason = f"platform schema problem: {exc}"
        else:
            failure = explain_connect_error(exc.__cause__ or exc, app.settings.async_database_url() or "")
            problem = failure.message if failure is not None else str(exc)
            what = "cannot connect to the database" if failure is not None and failure.fatal else "database unreachable"
            reason = f"{what}: {redact_text(problem, app.settings.secret_values())}"
        # The result JSON all the same (CONTRACT §3): a wrapper reading stdout learns that the run
        # could not start, and why, as from any run that ended in error.
        unstarted = [JobResult(job, started_at=started, finished_at=started) for job in jobs]
        for result in unstarted:
            result.fail(reason)
        print(json.dumps(_body(target, unstarted, started), ensure_ascii=False, default=str))
        return fail(reason, EXIT_FAILED)
    from scheduler.progress import watched_by
    from scheduler.progress_bar import terminal_watcher

    gc.freeze()  # start-up's objects outlive the run: shorter collections while it sends (daemon.py)
    results: list[JobResult] = []
    with _stop_on_signals(app), watched_by(terminal_watcher()):  # a bar on a terminal's stderr, else none
        for job in jobs:
            if results and app.lifecycle.stopping:
                break
            results.append(await app.runner.run(job, trigger=Trigger.MANUAL, dry_run=dry_run))
    secrets = app.settings.secret_values()
    for result in results:
        result.errors = [redact_text(error, secrets) for error in result.errors]
    print(json.dumps(_body(target, results, started), ensure_ascii=False, default=str))
    interrupted = app.lifecycle.stopping
    return EXIT_OK if all(result.success for result in results) and not interrupted else EXIT_FAILED


def _body(target: str, results: list[JobResult], started: datetime) -> dict[str, Any]:
    from scheduler.jobs.report import group_json, result_json

    return group_json(target, results, started) if target in GROUPS else result_json(results[0])


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
