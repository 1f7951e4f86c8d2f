"""Benchmark: send_booking_reminders for N due bookings through the real SDKs to stand-in providers.

    python bench/reminders.py [--bookings 2000] [--latency 0.05] [--rate 100] [--email-batch-size 1]
    python bench/reminders.py --email-heavy

Each booking owes 4 messages (WhatsApp and email to client and performer). Prints the time, the
bound set by the ceilings (messages / ceiling, per channel, the larger), their ratio, database
round trips per booking and per message, what the send-time check (void, quiet hours, the text
written afresh: notify/send_time.py) costs in statements and time, and peak Python memory.
Targets: <= 1.1 x the bound, memory flat in N.

--email-heavy: 4,000 emails only (2,000 bookings, WhatsApp off) at Resend's default ceiling,
EMAIL_MAX_PER_SECOND=2, in batches of EMAIL_BATCH_SIZE=100: 40 requests, so the bound is 20 s
(one by one it would be 2,000 s). Prints the time, the bound (requests / ceiling), the ratio
(target <= 1.1) and the busiest second of requests (never above the ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database
from scheduler.app import App, build
from scheduler.db.engine import create_engine
from scheduler.logging import configure_logging
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger
from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import max_in_window

# The statements of the send-time check: the void check, the bookings re-read, the holds, the rewrite.
SEND_TIME_MARKERS = ("WITH judged AS", "ORDER BY bookings.created_at", "SET status = 'held'", "AS v (id, subject")


class Meter:
    """Counts the app's database round trips (statements, BEGINs, COMMITs), and the statements and
    time of the send-time check (timed from outside, as it runs)."""

    def __init__(self, app: App) -> None:
        self.statements = 0
        self.send_time_statements = 0
        self.send_time_seconds = 0.0
        engine = app.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._round_trip)
        event.listen(engine, "commit", self._round_trip)
        send_time = app.dispatcher._send_time  # the one object every claimed batch goes through
        prepare = send_time.prepare

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await prepare(*args, **kwargs)
            finally:
                self.send_time_seconds += time.perf_counter() - began

        send_time.prepare = timed  # type: ignore[method-assign]

    def _round_trip(self, *_: object) -> None:
        self.statements += 1

    def _statement(self, _conn: object, _cursor: object, sql: str, *_: object) -> None:
        self.statements += 1
        self.send_time_statements += any(marker in sql for marker in SEND_TIME_MARKERS)


async def seed(url: str, bookings: int, now: datetime) -> None:
    """N confirmed bookings with events spread over the next 2 to 20 hours, each with its own people."""
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                WITH people AS (
                    SELECT g, gen_random_uuid() AS client_id, gen_random_uuid() AS performer_id
                    FROM generate_series(1, :n) g
                ), c AS (
                    INSERT INTO clients (id, user_id, first_name, last_name, email, phone)
                    SELECT client_id, gen_random_uuid(), 'Client', 'No' || g, 'client' || g || '@example.com',
                           '+614' || lpad((10000000 + g)::text, 8, '0')
                    FROM people RETURNING 1
                ), p AS (
                    INSERT INTO performers (id, user_id, stage_name, first_name, last_name, email, phone)
                    SELECT performer_id, gen_random_uuid(), 'Performer ' || g, 'P', 'No' || g,
                           'performer' || g || '@example.com', '+614' || lpad((20000000 + g)::text, 8, '0')
                    FROM people RETURNING 1
                )
                INSERT INTO bookings (booking_reference, client_id, performer_id, event_type, event_date,
                                      venue_address, total_amount, deposit_amount, status, payment_status)
                SELECT 'FE-B' || lpad(g::text, 6, '0'), client_id, performer_id, 'birthday_party',
                       CAST(:now AS timestamptz) + interval '2 hours' + (g * interval '20 hours' / :n),
                       '140 Murray St, Perth WA 6000', 1250, 250, 'confirmed', 'deposit_paid'
                FROM people
                """
            ),
            {"n": bookings, "now": now},
        )
    await engine.dispose()


@contextlib.contextmanager
def provider_servers(latency: float) -> Iterator[tuple[dict[str, str], Path]]:
    """Start the stand-in providers in a child process; yield their URLs and the times file."""
    times = Path(tempfile.mkstemp(prefix="fs-bench-times-", suffix=".json")[1])
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("provider_servers.py")), str(latency), str(times)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        yield urls, times
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="stand-in provider latency, seconds")
    parser.add_argument("--rate", type=float, default=100, help="both WHATSAPP_ and EMAIL_MAX_PER_SECOND")
    parser.add_argument("--memory", action="store_true", help="trace Python allocations (slows the run down)")
    parser.add_argument("--email-batch-size", type=int, default=1, help="EMAIL_BATCH_SIZE (1: one request per email)")
    parser.add_argument("--email-heavy", action="store_true", help="4,000 emails only, 2/s, batches of 100")
    return parser.parse_args()


async def main() -> None:
    args = _arguments()
    if args.email_heavy:
        await email_heavy(args.latency)
        return
    configure_logging(level="WARNING", fmt="console")
    now = datetime.now(UTC)
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await seed(url, args.bookings, now)
            with provider_servers(args.latency) as (urls, times_file):
                settings = Settings(
                    _env_file=None,
                    database_url=url,
                    twilio_account_sid=TWILIO_ACCOUNT_SID,
                    twilio_auth_token=TWILIO_AUTH_TOKEN,
                    twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
                    twilio_api_base_url=urls["twilio"],
                    resend_api_key=RESEND_API_KEY,
                    resend_api_url=urls["resend"],
                    whatsapp_max_per_second=args.rate,
                    email_max_per_second=args.rate,
                    email_batch_size=args.email_batch_size,
                    database_pool_size=10,
                    quiet_hours="off",  # measured at any hour
                )
                app = build(settings)
                await app.prepare_database()
                gc.freeze()  # as the daemon and --run-once do once started (scheduler/daemon.py)
                meter = Meter(app)
                if args.memory:
                    tracemalloc.start()
                started, started_monotonic, cpu = time.perf_counter(), time.monotonic(), time.process_time()
                result = await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                peak = tracemalloc.get_traced_memory()[1] if args.memory else 0
                tracemalloc.stop()
                await app.aclose()
            arrivals = json.loads(times_file.read_text())
            times_file.unlink()
        finally:
            await drop_database(server, url)
    whatsapp_times, email_times = arrivals["whatsapp"], arrivals["email"]
    messages = len(whatsapp_times) + len(email_times)
    bound = max(len(whatsapp_times), len(email_times)) / args.rate
    assert result.success, result.errors[:5]
    print(
        f"bookings reminded       {result.count:,} ({messages:,} messages, latency {args.latency * 1000:.0f} ms, ceilings {args.rate:g}/s)"
    )
    print(f"time                    {elapsed:8.2f} s" + ("   (slowed by --memory tracing)" if args.memory else ""))
    arrived = sorted(whatsapp_times + email_times)  # both processes' time.monotonic(): one clock
    if arrived:
        print(
            f"requests arrived        {arrived[0] - started_monotonic:8.2f} s to {arrived[-1] - started_monotonic:.2f} s"
            " after the start (sending begins once the first 500 bookings are recorded)"
        )
    print(f"bound (msgs / ceiling)  {bound:8.2f} s")
    print(f"ratio time / bound      {elapsed / bound:8.2f}   (target <= 1.1)")
    print(
        f"daemon CPU              {cpu:8.2f} s   ({cpu / max(messages, 1) * 1e3:.2f} ms per message; the machine's other load aside)"
    )
    print(
        f"busiest second          whatsapp {max_in_window(whatsapp_times)}, email {max_in_window(email_times)}  (ceiling {args.rate:g})"
    )
    print(f"DB round trips/booking  {meter.statements / max(result.count, 1):8.2f}   (statements, BEGINs and COMMITs)")
    print(f"DB round trips/message  {meter.statements / max(messages, 1):8.3f}")
    per_message = meter.send_time_statements / max(messages, 1)
    micros = meter.send_time_seconds / max(messages, 1) * 1e6
    print(
        f"send-time check         {meter.send_time_statements} statements ({per_message:.4f} per message),"
        f" {meter.send_time_seconds:.2f} s ({micros:.0f} us per message; both channels' claims overlap)"
    )
    if args.memory:
        print(f"peak Python memory      {peak / 1024 / 1024:8.2f} MiB (tracemalloc, during the run)")


async def email_heavy(latency: float, bookings: int = 2000, rate: float = 2, batch_size: int = 100) -> None:
    """The email-heavy case: every message an email, batched, at Resend's default request rate."""
    configure_logging(level="WARNING", fmt="console")
    now = datetime.now(UTC)
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await seed(url, bookings, now)
            with provider_servers(latency) as (urls, times_file):
                settings = Settings(
                    _env_file=None,
                    database_url=url,
                    resend_api_key=RESEND_API_KEY,
                    resend_api_url=urls["resend"],
                    email_max_per_second=rate,
                    email_batch_size=batch_size,
                    database_pool_size=10,
                )
                app = build(settings)  # WhatsApp off: its messages are recorded as skipped
                await app.prepare_database()
                gc.freeze()  # as the daemon and --run-once do once started (scheduler/daemon.py)
                # When each request started, as the daemon saw it (the transport reports each call's
                # duration when it ends): the stand-in server's own stamps bunch whenever its process
                # waits for a CPU, which on a loaded machine says more about the machine than the daemon.
                starts: list[float] = []
                observe = app.metrics.observe_provider_request

                def stamp(provider: str, outcome: str, seconds: float) -> None:
                    starts.append(time.monotonic() - seconds)
                    observe(provider, outcome, seconds)

                app.metrics.observe_provider_request = stamp  # type: ignore[method-assign]
                started = time.monotonic()  # the system-wide clock the stand-in servers stamp arrivals with
                result = await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
                elapsed = time.monotonic() - started
                await app.aclose()
            arrivals = json.loads(times_file.read_text())
            times_file.unlink()
        finally:
            await drop_database(server, url)
    assert result.success, result.errors[:5]
    requests = sorted(arrivals["email_batch"] + arrivals["email"])
    emails = arrivals["emails_accepted"]
    bound = len(requests) / rate
    print(
        f"emails sent             {emails:,} in {len(requests)} requests (batch {batch_size}, latency {latency * 1000:.0f} ms)"
    )
    print(f"time                    {elapsed:8.2f} s")
    print(f"bound (requests / {rate:g}/s) {bound:8.2f} s   (one by one: {emails / rate:,.0f} s)")
    print(f"ratio time / bound      {elapsed / bound:8.2f}   (target <= 1.1)")
    starts.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    print(f"busiest second          {max_in_window(starts)} requests started by the daemon  (ceiling {rate:g})")
    print(
        f"                        {max_in_window(requests)} arriving at the stand-in server (its own scheduling included)"
    )
    print(f"requests started        {starts[0] - started:8.2f} s to {starts[-1] - started:.2f} s after the start, "
          f"{min(gaps):.3f} s apart at least")  # fmt: skip
    arrived = [later - earlier for earlier, later in itertools.pairwise(requests)]
    print(f"arrivals at the server  {min(arrived):8.3f} s apart at least, {max(arrived):.3f} s at most")
    print(f"before the first        {starts[0] - started:8.2f} s   (finding and planning the first batch of bookings)")
    print(f"sending (first to last) {requests[-1] - requests[0]:8.2f} s   (39 intervals of 0.5 s: 19.5 s)")


if __name__ == "__main__":
    asyncio.run(main())
