"""Benchmark: cleanup_old_notifications in batches against one big DELETE on an identical copy.

    python bench/cleanup.py [--rows 1000000] [--batch 5000] [--layout together|interleaved]

Two layouts of the table, each printed: `together` has the old read notifications first and the
recent ones after them (a table written in date order); `interleaved` mixes every old read row
with old unread ones (kept: one in four) and with recent ones in the same blocks.
Prints both times, their ratio, the longest single transaction of the job and the job's peak
Python memory (from one more run, traced: tracemalloc slows Python down several times, so the
timed runs are not traced). Targets: ratio <= 1.4, longest transaction <= 1 s, memory flat in N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database, transaction_durations
from scheduler.app import build
from scheduler.clock import FrozenClock
from scheduler.db.engine import create_engine
from scheduler.logging import configure_logging
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


async def fill(url: str, rows: int, layout: str) -> None:
    """`rows` old read notifications and as many others (recent, or old and unread)."""
    engine = create_engine(url, pool_size=1)
    insert = (
        "INSERT INTO notifications (user_id, booking_id, type, title, message, is_read, created_at) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'booking_update', 'Your booking was updated', "
        "'The performer confirmed your booking for Saturday night.', {read}, {created} "
        "FROM generate_series(1, :rows) g"
    )
    old, recent = "CAST(:old AS timestamptz) - (g * interval '1 second')", "CAST(:recent AS timestamptz)"
    if layout == "together":
        statements = [insert.format(read="true", created=old), insert.format(read="true", created=recent)]
    else:  # per 8 rows: 4 old read, 1 old unread, 3 recent (so 2 * rows rows, half of them to delete)
        statements = [
            insert.replace(":rows", "2 * :rows").format(
                read="g % 8 <> 4", created=f"CASE WHEN g % 8 < 5 THEN {old} ELSE {recent} END"
            )
        ]
    bind = {"rows": rows, "old": NOW - timedelta(days=60), "recent": NOW - timedelta(days=2)}
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), bind)
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


async def batched_job(url: str, batch: int, *, traced: bool = False) -> tuple[float, int, float, int, int]:
    """The job's seconds, rows, longest transaction, peak traced memory (0 untraced) and batches."""
    settings = Settings(_env_file=None, database_url=url, delete_batch_size=batch)
    app = build(settings, clock=FrozenClock(NOW), transports={})
    await app.prepare_database()
    durations = transaction_durations(app.engine)
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    result = await app.runner.run(JobName.CLEANUP_OLD_NOTIFICATIONS, trigger=Trigger.MANUAL)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await app.aclose()
    assert result.success, result.errors
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
    parser.add_argument("--rows", type=int, default=1_000_000, help="old read notifications (as many others)")
    parser.add_argument("--batch", type=int, default=5000, help="DELETE_BATCH_SIZE")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--layout", choices=LAYOUTS, action="append", help="the table's layout (default: both)")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    with bench_server() as server:
        for layout in args.layout or LAYOUTS:
            await measure(server, layout, args.rows, args.batch, args.repeat)


LAYOUTS = ("together", "interleaved")


async def measure(server: str, layout: str, rows: int, batch: int, repeat: int) -> None:
    job_times: list[float] = []
    delete_times: list[float] = []
    longest: list[float] = []
    batches = 0
    original = await fresh_database(server)
    await fill(original, rows, layout)
    name = make_url(original).database
    try:
        for round_no in range(repeat + 1):
            # Two identical copies: one for the job, one for the single DELETE; the last round
            # runs the job alone, traced, for its memory.
            traced = round_no == repeat
            job_db = await fresh_database(server, template=name)
            delete_db = await fresh_database(server, template=name)
            try:
                contenders = ["job"] if traced else ["job", "delete"] if round_no % 2 == 0 else ["delete", "job"]
                for contender in contenders:
                    await checkpoint(server)
                    if contender == "job":
                        seconds, job_rows, worst, peak, batches = await batched_job(job_db, batch, traced=traced)
                        assert job_rows == rows, (job_rows, rows)
                        if not traced:
                            job_times.append(seconds)
                            longest.append(worst)
                    else:
                        seconds, delete_rows = await single_delete(delete_db)
                        assert delete_rows == rows, (delete_rows, rows)
                        delete_times.append(seconds)
            finally:
                await drop_database(server, job_db)
                await drop_database(server, delete_db)
    finally:
        await drop_database(server, original)
    job, delete = statistics.median(job_times), statistics.median(delete_times)
    print(f"layout                  {layout}")
    print(f"rows deleted            {rows:,} of {2 * rows:,} (batch {batch:,}, {batches} transactions)")
    print(f"single DELETE           {delete:8.2f} s   (median of {repeat}: {_list(delete_times)})")
    print(f"cleanup job (batched)   {job:8.2f} s   (median of {repeat}: {_list(job_times)})")
    print(f"ratio job / DELETE      {job / delete:8.2f}   (target <= 1.4)")
    print(f"longest transaction     {max(longest):8.3f} s   (target <= 1 s)")
    print(f"job peak Python memory  {peak / 1024 / 1024:8.2f} MiB (tracemalloc, one more run)")


def _list(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    asyncio.run(main())
