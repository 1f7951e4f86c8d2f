"""Benchmark: cleanup_old_notifications in batches against one big DELETE on an identical copy.

    python bench/cleanup.py [--rows 1000000] [--batch 5000]

Prints both times, their ratio, the longest single transaction of the job and the job's peak
Python memory. Targets: ratio <= 1.3, longest transaction <= 1 s, memory flat in N.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database, transaction_durations
from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db.engine import create_engine
from scheduler.logging import configure_logging
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


async def fill(url: str, rows: int) -> None:
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        for created, read in ((NOW - timedelta(days=60), True), (NOW - timedelta(days=2), True)):
            await conn.execute(
                text(
                    "INSERT INTO notifications (user_id, booking_id, type, title, message, is_read, created_at) "
                    "SELECT gen_random_uuid(), gen_random_uuid(), 'booking_update', 'Your booking was updated', "
                    "'The performer confirmed your booking for Saturday night.', :read, CAST(:created AS timestamptz) - (g * interval '1 second') "
                    "FROM generate_series(1, :rows) g"
                ),
                {"rows": rows, "read": read, "created": created},
            )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")  # in place: CREATE DATABASE, VACUUM
        await conn.execute(text("VACUUM ANALYZE notifications"))
    await engine.dispose()


async def single_delete(url: str) -> tuple[float, int]:
    engine = create_engine(url, pool_size=1)
    started = time.perf_counter()
    async with engine.begin() as conn:
        result = await conn.execute(
            text("DELETE FROM notifications WHERE is_read AND created_at < :cutoff"),
            {"cutoff": NOW - timedelta(days=30)},
        )
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed, int(result.rowcount)  # type: ignore[attr-defined]


async def batched_job(url: str, batch: int) -> tuple[float, int, float, int, int]:
    settings = Settings(_env_file=None, database_url=url, delete_batch_size=batch)
    app = build(settings, clock=FrozenClock(NOW), transports={})
    await app.prepare_database()
    durations = transaction_durations(app.engine)
    tracemalloc.start()
    started = time.perf_counter()
    result = await app.runner.run(JobName.CLEANUP_OLD_NOTIFICATIONS, trigger=Trigger.MANUAL)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await app.aclose()
    assert result.success, result.errors
    import os

    if os.environ.get("BENCH_VERBOSE"):
        print(
            "slowest transactions (s):", [round(d, 3) for d in sorted(durations)[-8:]], "sum", round(sum(durations), 3)
        )
    return elapsed, result.count, max(durations), peak, int(result.details["batches"])


async def checkpoint(server: str) -> None:
    """Flush dirty pages first, so neither contender pays for the other's writes."""
    from tests.database import admin

    await admin(server, "CHECKPOINT")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old read notifications (as many recent ones)")
    parser.add_argument("--batch", type=int, default=5000, help="DELETE_BATCH_SIZE")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    job_times, delete_times, longest, peaks = [], [], [], []
    batches = 0
    with bench_server() as server:
        original = await fresh_database(server)
        await fill(original, args.rows)
        from sqlalchemy.engine import make_url

        name = make_url(original).database
        try:
            for round_no in range(args.repeat):
                # Two identical copies: one for the job, one for the single DELETE.
                job_db = await fresh_database(server, template=name)
                delete_db = await fresh_database(server, template=name)
                try:
                    contenders = ["job", "delete"] if round_no % 2 == 0 else ["delete", "job"]
                    for contender in contenders:
                        await checkpoint(server)
                        if contender == "job":
                            seconds, job_rows, worst, peak, batches = await batched_job(job_db, args.batch)
                            job_times.append(seconds)
                            longest.append(worst)
                            peaks.append(peak)
                        else:
                            seconds, delete_rows = await single_delete(delete_db)
                            delete_times.append(seconds)
                    assert job_rows == delete_rows == args.rows, (job_rows, delete_rows)
                finally:
                    await drop_database(server, job_db)
                    await drop_database(server, delete_db)
        finally:
            await drop_database(server, original)
    job, delete = statistics.median(job_times), statistics.median(delete_times)
    print(f"rows deleted            {args.rows:,} of {2 * args.rows:,} (batch {args.batch:,}, {batches} transactions)")
    print(f"single DELETE           {delete:8.2f} s   (median of {args.repeat}: {_list(delete_times)})")
    print(f"cleanup job (batched)   {job:8.2f} s   (median of {args.repeat}: {_list(job_times)})")
    print(f"ratio job / DELETE      {job / delete:8.2f}   (target <= 1.3)")
    print(f"longest transaction     {max(longest):8.3f} s   (target <= 1 s)")
    print(f"job peak Python memory  {max(peaks) / 1024 / 1024:8.2f} MiB (tracemalloc, during the job)")


def _list(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    asyncio.run(main())
