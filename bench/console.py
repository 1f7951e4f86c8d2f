"""Benchmark: each console command's wall time as a process, on a history of 100,000 runs and
1,000,000 messages.

    python bench/console.py [--runs 100000] [--messages 1000000] [--repeat 7]

The history is made by the daemon's own code first: 2,000 due bookings reminded (booking and
payment reminders), cancelled and cleaned up by the real jobs through the runner, with recording
transports failing on cue (sent, failed, skipped, left pending and then void). Running the jobs
100,000 times would take hours, so that history is then multiplied in bulk, by SQL, into the
same tables: copies of the rows the daemon wrote, moved back in time, with their own ids, slots
and dedupe keys (and booking references, so that a booking keeps its own few messages). Prints
the median and the slowest of `--repeat` runs of each command as a process, the same command's own
work in-process (connection, queries, tables: its modules already loaded), the interpreter's own
start and the imports and settings every command pays for comparison, and whether PostgreSQL
scanned either big table in full for any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reminders import seed
from bench.support import bench_server, drop_database, fresh_database
from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db.engine import create_engine
from scheduler.notify.recording import RecordingTransport
from scheduler.notify.transport import PermanentSendError
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, Trigger
from tests.database import to_libpq

OWN = "flavor_scheduler"
BOOKINGS = 2000


async def daemon_history(url: str, now: datetime) -> None:
    """Runs and messages written by the jobs themselves."""
    await seed(url, BOOKINGS, now)
    settings = Settings(_env_file=None, database_url=to_libpq(url), http_port=0)
    clock = FrozenClock(now)
    whatsapp, email = RecordingTransport(Channel.WHATSAPP), RecordingTransport(Channel.EMAIL)
    for n in range(1, BOOKINGS, 50):  # a few refused for good, some failing for a while
        email.fail_to(f"client{n}@example.com", PermanentSendError("422 validation_error"))
    whatsapp.fail_next(300)
    app = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email})
    await app.prepare_database()
    engine = create_engine(url, pool_size=1)
    try:
        await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.SCHEDULE)
        await app.runner.run(JobName.SEND_PAYMENT_REMINDERS, trigger=Trigger.SCHEDULE)
        async with engine.begin() as conn:  # some bookings cancelled while their messages wait: void
            await conn.execute(text("UPDATE bookings SET status = 'cancelled' WHERE booking_reference LIKE '%7'"))
        clock.advance(3600)
        await app.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.SCHEDULE)
        for job in (JobName.CLEANUP_STALE_BOOKINGS, JobName.CLEANUP_OLD_NOTIFICATIONS, JobName.CLEANUP_EXPIRED_OTPS):
            await app.runner.run(job, trigger=Trigger.MANUAL)
    finally:
        await app.aclose()
        await engine.dispose()


# Copies of the daemon's rows, each generation a little further back in time.
_MULTIPLY_RUNS = f"""
    INSERT INTO {OWN}.job_runs (id, job_name, slot, scheduled_for, trigger, status, replica_id, dry_run, attempt,
                                started_at, finished_at, lease_expires_at, counts, errors)
    SELECT gen_random_uuid(), r.job_name, coalesce(r.slot, 'manual') || ':' || g, r.scheduled_for,
           r.trigger, CASE WHEN g % 97 = 0 THEN 'error' WHEN g % 13 = 0 THEN 'partial' ELSE 'success' END,
           'replica-' || (g % 3), false, 1,
           r.started_at - g * interval '30 minutes', r.finished_at - g * interval '30 minutes', NULL,
           r.counts, CASE WHEN g % 97 = 0 THEN '["database unreachable"]'::jsonb ELSE '[]'::jsonb END
    FROM {OWN}.job_runs AS r CROSS JOIN generate_series(1, :copies) AS g
    WHERE r.status <> 'running'
"""
_MULTIPLY_DELIVERIES = f"""
    INSERT INTO {OWN}.deliveries (id, dedupe_key, booking_id, booking_reference, kind, event_date, recipient_role,
        channel, address, subject, body_text, body_html, content_sid, content_variables, status, attempts,
        next_attempt_at, provider_message_id, last_error, provider_status, created_at, updated_at, sent_at)
    SELECT gen_random_uuid(), d.dedupe_key || ':' || g, d.booking_id, d.booking_reference || '-' || g, d.kind,
           d.event_date - g * interval '9 hours', d.recipient_role, d.channel, d.address, d.subject, d.body_text,
           d.body_html, d.content_sid, d.content_variables,
           CASE WHEN d.status IN ('pending', 'held', 'sending') THEN 'sent' ELSE d.status END, d.attempts,
           d.next_attempt_at, d.provider_message_id || '-' || g, d.last_error,
           CASE WHEN g % 3 = 0 THEN 'delivered' END,
           d.created_at - g * interval '9 hours', d.updated_at - g * interval '9 hours', d.sent_at - g * interval '9 hours'
    FROM {OWN}.deliveries AS d CROSS JOIN generate_series(1, :copies) AS g
"""


async def multiply(url: str, *, runs: int, messages: int) -> tuple[int, int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            have_runs = await conn.scalar(text(f"SELECT count(*) FROM {OWN}.job_runs"))
            have_messages = await conn.scalar(text(f"SELECT count(*) FROM {OWN}.deliveries"))
            await conn.execute(text(_MULTIPLY_RUNS), {"copies": max(0, runs // have_runs - 1)})
            await conn.execute(text(_MULTIPLY_DELIVERIES), {"copies": max(0, messages // have_messages - 1)})
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM ANALYZE {OWN}.job_runs"))
            await conn.execute(text(f"VACUUM ANALYZE {OWN}.deliveries"))
            counts = await conn.execute(
                text(f"SELECT (SELECT count(*) FROM {OWN}.job_runs), (SELECT count(*) FROM {OWN}.deliveries)")
            )
            return tuple(counts.one())  # type: ignore[return-value]
    finally:
        await engine.dispose()


async def samples(url: str) -> dict[str, str]:
    """Ids and references the commands are timed on: a failed message, a sent one, a booking."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:

            async def one(sql: str) -> str:
                return str(await conn.scalar(text(sql)))

            return {
                "failed": await one(f"SELECT id FROM {OWN}.deliveries WHERE status = 'failed' LIMIT 1"),
                "sent": await one(f"SELECT id FROM {OWN}.deliveries WHERE status = 'sent' LIMIT 1"),
                "booking": await one("SELECT booking_reference FROM bookings ORDER BY booking_reference LIMIT 1"),
            }
    finally:
        await engine.dispose()


def timed(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float, int]:
    times = []
    code = 0
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        code = done.returncode
    return statistics.median(times), max(times), code


async def full_scans(url: str) -> list[str]:
    """The console's statements whose plan reads a whole big table (pg_stat counters, per statement run)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT relname, seq_scan FROM pg_stat_user_tables "
                    "WHERE schemaname = :schema AND relname IN ('job_runs', 'deliveries')"
                ),
                {"schema": OWN},
            )
            return [f"{row.relname}={row.seq_scan}" for row in rows]
    finally:
        await engine.dispose()


async def in_process(command: list[str], env: dict[str, str], repeat: int) -> float:
    """The command's own work (connect, queries, tables), its modules already loaded: the median."""
    import contextlib
    import io

    from scheduler.cli_parser import build_parser
    from scheduler.console.run import run_console_command
    from scheduler.limits import PRODUCTION

    settings = Settings(_env_file=None, database_url=env["DATABASE_URL"], http_port=0)
    args = build_parser().parse_args(command)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            await run_console_command(args, settings, PRODUCTION)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed) to look into")
    args = parser.parse_args()
    now = datetime.now(UTC) - timedelta(hours=2)
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            started = time.perf_counter()
            await daemon_history(url, now)
            made = time.perf_counter() - started
            runs, messages = await multiply(url, runs=args.runs, messages=args.messages)
            print(f"history: {runs:,} runs, {messages:,} messages (the jobs' own history made in {made:.1f} s)")
            ids = await samples(url)
            env = {
                key: value
                for key, value in os.environ.items()
                if not key.startswith(("DATABASE_", "TWILIO_", "RESEND_", "SCHEDULE_"))
            }
            env.update(DATABASE_URL=to_libpq(url), COLUMNS="160")
            program = [sys.executable, "-m", "scheduler"]
            commands = [
                ["status"],
                ["status", "--json"],
                ["runs"],
                ["runs", "send_booking_reminders"],
                ["runs", "--failed"],
                ["runs", "--since", "1d", "--limit", "200"],
                ["messages"],
                ["messages", "--status", "failed"],
                ["messages", "--channel", "email", "--since", "2h"],
                ["messages", "--booking", ids["booking"]],
                ["messages", "--booking", ids["booking"], "--json"],
                ["resend", ids["failed"]],
                ["resend", ids["sent"], "--force"],
                ["cancel", ids["failed"]],  # pending again since the resend above
                ["pause", "send_booking_reminders", "--reason", "bench"],
                ["resume", "send_booking_reminders"],
                ["--list-jobs"],
            ]
            base, _, _ = timed([sys.executable, "-c", "pass"], env, args.repeat)
            print(f"{'python -c pass (the interpreter alone)':58} median {base * 1000:6.0f} ms")
            load = "from scheduler.settings import load_settings; load_settings(); import scheduler.cli, scheduler.console.run, scheduler.console.tables, asyncpg, rich.console, rich.table"
            imports, _, _ = timed([sys.executable, "-c", load], env, args.repeat)
            print(f"{'the imports and settings of a command (no database)':58} median {imports * 1000:6.0f} ms")
            before = await full_scans(url)
            for command in commands:
                median, slowest, code = timed(program + command, env, args.repeat)
                label = "flavor-scheduler " + " ".join(part if len(part) < 20 else part[:8] + "…" for part in command)
                work = await in_process(command, env, args.repeat) if command[0] != "--list-jobs" else None
                own = f"  its own work {work * 1000:5.0f} ms" if work is not None else ""
                print(f"{label:58} median {median * 1000:6.0f} ms  slowest {slowest * 1000:6.0f} ms  exit {code}{own}")
            after = await full_scans(url)
            print(f"sequential scans of job_runs/deliveries before {before}, after {after}")
        finally:
            if args.keep:
                print(f"kept: {to_libpq(url)}")
            else:
                await drop_database(server, url)


if __name__ == "__main__":
    asyncio.run(main())
