"""The console's reading commands: `status` (every job's schedule, pause, runs and the message
backlog), `runs` (the run history) and `messages` (the messages owed, or one booking's trail).

Apart from the operator's changes (`changes.py`) because these never write: each is a few
statements on the command's connection, turned into a document and tables.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from scheduler.console import documents
from scheduler.console.answer import Answer, Context
from scheduler.db import console_messages, console_queries
from scheduler.jobs.catalog import JOBS, schedule_for

if TYPE_CHECKING:
    import asyncpg

BACKLOG_WINDOW = timedelta(hours=24)  # `status` counts settled messages owed this long ago at most
DEFAULT_LIMIT = 50  # rows: a screen


def next_fire(expression: str, tz: tzinfo, now: datetime) -> datetime | None:
    """When the daemon's trigger for this cron expression fires next (the same trigger code)."""
    from scheduler.triggers import build_trigger

    fire: datetime | None = build_trigger(expression, tz).get_next_fire_time(None, now.astimezone(tz))
    return fire


async def status(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Every job's schedule, pause, runs in progress, last run and next run; the message backlog."""
    from scheduler.console.tables import print_status
    from scheduler.cron import OFF

    overview = await console_queries.job_overview(conn, [job.value for job in JOBS])
    db_now = await console_queries.database_now(conn)
    since = ctx.now - BACKLOG_WINDOW
    backlog = await console_messages.message_backlog(conn, since=since)
    jobs = []
    for job in JOBS:
        expression = schedule_for(ctx.settings, job)
        enabled = expression != OFF
        jobs.append(
            documents.job_document(
                overview[job.value],
                schedule=expression,
                enabled=enabled,
                next_run=next_fire(expression, ctx.tz, ctx.now) if enabled else None,
                db_now=db_now,
                secrets=ctx.secrets,
            )
        )
    document = {
        "now": documents.iso(ctx.now),
        "timezone": ctx.settings.timezone,
        "database": {"reachable": True, "revision": await console_queries.schema_revision(conn)},
        "jobs": jobs,
        "messages": backlog,
        "messagesSince": documents.iso(since),
    }
    return Answer(document, lambda console: print_status(console, document, ctx.tz, ctx.settings.timezone))


def _since(ctx: Context) -> datetime | None:
    from scheduler.console.when import parse_since

    return parse_since(ctx.args.since, now=ctx.now, tz=ctx.tz) if ctx.args.since else None


def _limit(ctx: Context) -> int:
    from scheduler.console.when import parse_limit

    return parse_limit(ctx.args.limit) if ctx.args.limit else DEFAULT_LIMIT


async def runs(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """The run history of every replica and trigger, newest first."""
    from scheduler.console.tables import print_runs

    rows = await console_queries.list_runs(
        conn, job=ctx.args.job, failed=ctx.args.failed, since=_since(ctx), limit=_limit(ctx)
    )
    listed = [documents.run_document(run, ctx.secrets) for run in rows]
    return Answer({"runs": listed}, lambda console: print_runs(console, listed, ctx.tz, ctx.settings.timezone))


async def messages(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Messages owed, newest first; with --booking and no other filter, the booking's whole trail."""
    from scheduler.console.tables import print_messages, print_trail

    args = ctx.args
    if args.booking and not (args.status or args.channel or args.since or args.limit):
        trail = await console_messages.booking_trail(conn, args.booking)
        document = documents.trail_document(trail, ctx.secrets)
        answer = Answer(
            document, lambda console: print_trail(console, document, args.booking, ctx.tz, ctx.settings.timezone)
        )
        if trail.booking is None and not trail.messages:
            answer.problems.append(
                f"no booking {args.booking!r}: neither the platform's bookings nor any message name it"
            )
        return answer
    rows = await console_messages.list_messages(
        conn, booking=args.booking, status=args.status, channel=args.channel, since=_since(ctx), limit=_limit(ctx)
    )
    listed = [documents.message_document(message, ctx.secrets) for message in rows]
    title = f"Messages, newest first (times in {ctx.settings.timezone})"
    return Answer({"messages": listed}, lambda console: print_messages(console, listed, ctx.tz, title))
