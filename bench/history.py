"""Benchmark: the daemon's reads of its own history, and cleanup_scheduler_history, on a big history.

    python bench/history.py [--runs 100000] [--messages 200000] [--batch 5000]

Seeds `--runs` finished runs (seven jobs, over 180 days) and `--messages` settled messages (over
120 days, realistic text), then prints:
- the median time of the last-success/last-error read every daemon does every 30 s, and of the
  pause check each scheduled fire makes (the job not paused), over 50 rounds;
- cleanup_scheduler_history: its time, rows deleted and blanked, transactions, the longest one.
Targets: each read well under 10 ms; the longest cleanup transaction under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database, transaction_durations
from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db import runs as runs_db
from scheduler.db.engine import create_engine
from scheduler.logging import configure_logging
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
ROUNDS = 50
BODY = (
    "Hi Jane, a reminder: your booking FE-10231 with DJ Nova is tomorrow, Saturday 5 December 2026, "
    "7:00 pm, at 140 Murray St, Perth WA 6000. The balance of $1,000.00 is due before the event. "
) * 3


async def fill(url: str, runs: int, messages: int) -> None:
    engine = create_engine(url, pool_size=1)
    jobs = [job.value for job in JobName]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, trigger, status, replica_id, started_at, "
                "finished_at, counts, errors) "
                "SELECT gen_random_uuid(), (CAST(:jobs AS text[]))[1 + g % 7], 'slot-' || g, 'schedule', "
                "CASE WHEN g % 50 = 0 THEN 'error' WHEN g % 10 = 0 THEN 'partial' ELSE 'success' END, 'host:1:abc', "
                "CAST(:now AS timestamptz) - g * (interval '180 days' / :runs), "
                "CAST(:now AS timestamptz) - g * (interval '180 days' / :runs) + interval '2 seconds', "
                "'{\"deletedCount\": 3}', '[]' FROM generate_series(1, :runs) g"
            ),
            {"jobs": jobs, "now": NOW, "runs": runs},
        )
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.deliveries (id, dedupe_key, booking_id, booking_reference, kind, "
                "recipient_role, channel, address, subject, body_text, body_html, status, attempts, "
                "provider_message_id, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'k-' || g, gen_random_uuid(), 'FE-' || g, 'booking_reminder', 'client', "
                "CASE WHEN g % 2 = 0 THEN 'whatsapp' ELSE 'email' END, "
                "CASE WHEN g % 2 = 0 THEN '+61412345678' ELSE 'jane@example.com' END, "
                "'Your booking tomorrow', :body, CASE WHEN g % 2 = 1 THEN '<p>' || :body || '</p>' END, "
                "CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'sent' END, 1, 'SM' || g, "
                "CAST(:now AS timestamptz) - g * (interval '120 days' / :messages), "
                "CAST(:now AS timestamptz) - g * (interval '120 days' / :messages) FROM generate_series(1, :messages) g"
            ),
            {"body": BODY, "now": NOW, "messages": messages},
        )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE flavor_scheduler.job_runs"))
        await conn.execute(text("VACUUM ANALYZE flavor_scheduler.deliveries"))
    await engine.dispose()


async def reads(url: str) -> tuple[float, float]:
    engine = create_engine(url, pool_size=1)
    jobs = [job.value for job in JobName]
    gauges, checks = [], []
    try:
        async with engine.connect() as conn:
            for _ in range(ROUNDS):
                async with conn.begin():
                    started = time.perf_counter()
                    await runs_db.last_finishes(conn, jobs)
                    gauges.append(time.perf_counter() - started)
                async with conn.begin():
                    started = time.perf_counter()
                    fire = runs_db.FireRow(
                        jobs[0], slot="x", scheduled_for=NOW, trigger="schedule", replica="b", now=NOW
                    )
                    paused = await runs_db.skip_if_paused(conn, fire)
                    checks.append(time.perf_counter() - started)
                    assert paused is None
    finally:
        await engine.dispose()
    return statistics.median(gauges), statistics.median(checks)


async def cleanup(url: str, batch: int) -> tuple[float, dict[str, int], int, float]:
    settings = Settings(_env_file=None, database_url=url, delete_batch_size=batch)
    app = build(settings, clock=FrozenClock(NOW), transports={})
    await app.prepare_database()
    durations = transaction_durations(app.engine)
    started = time.perf_counter()
    result = await app.runner.run(JobName.CLEANUP_SCHEDULER_HISTORY, trigger=Trigger.MANUAL)
    elapsed = time.perf_counter() - started
    await app.aclose()
    assert result.success, result.errors
    details = {key: int(value) for key, value in result.details.items()}
    return elapsed, details, result.count, max(durations)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="DELETE_BATCH_SIZE")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await fill(url, args.runs, args.messages)
            gauge, check = await reads(url)
            elapsed, details, deleted, longest = await cleanup(url, args.batch)
        finally:
            await drop_database(server, url)
    print(f"history                 {args.runs:,} runs over 180 days, {args.messages:,} messages over 120 days")
    print(f"last finishes (gauges)  {gauge * 1000:8.2f} ms  (median of {ROUNDS}; every daemon, every 30 s)")
    print(f"pause check per fire    {check * 1000:8.2f} ms  (median of {ROUNDS}; the job not paused)")
    print(
        f"cleanup_scheduler_history {elapsed:6.2f} s   deleted {deleted:,} (runs {details['runsDeleted']:,}, "
        f"messages {details['messagesDeleted']:,}), blanked {details['messagesBlanked']:,}, "
        f"{details['batches']} transactions of up to {args.batch:,}"
    )
    print(f"longest transaction     {longest:8.3f} s   (target <= 1 s)")


if __name__ == "__main__":
    asyncio.run(main())
