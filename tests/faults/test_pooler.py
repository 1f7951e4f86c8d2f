"""Replicas through a pooler: PgBouncer in transaction pooling mode (tests/faults/pgbouncer.py)
in front of the test's PostgreSQL, every client of the database going through it.

The control first: a client that keeps prepared statements between transactions (asyncpg's and
SQLAlchemy's defaults) fails through this pooler, the daemon's engine does not. Then the
scenario: three daemons (the real program, every job every ten seconds) and, alongside them,
back-to-back `--run-once` invocations in three lanes, all on a database that none of them has
migrated yet, while new due and stale bookings and rows to delete keep arriving, for three
fires. Invariants: each scheduled fire runs once in all replicas (one run-history row and
one `job_started` line per job and slot; a fire whose job was already running is skipped, never
run twice), each owed message reaches the stand-in providers exactly once, every booking is
fully reminded or cancelled, and no log says "prepared statement".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from scheduler.app import build
from scheduler.db.engine import create_engine
from scheduler.demo.seed import create_platform_tables
from scheduler.schedule import slot_key
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, Trigger
from tests.acceptance.daemons import (
    SHUTDOWN_TIMEOUT_SECONDS,
    DaemonProcess,
    daemons,
    eventually,
    stop_gracefully,
)
from tests.database import DatabaseFactory, to_asyncpg, with_database
from tests.fakes.providers import FakeResend, FakeTwilio
from tests.faults.pgbouncer import DEFAULT_POOL_SIZE, PgBouncer, PoolerSession, prepared_statement_errors
from tests.faults.support import (
    EXPOSURE,
    FULL,
    Cli,
    Finished,
    Seeded,
    booking_parts,
    cli_env,
    delivery_statuses,
    record,
    seed_bookings,
    stand_in_providers,
    stored_errors,
)

ZONE = "Australia/Perth"
REPLICAS = 3
LANES = 3  # concurrent `--run-once` invocations at any moment
LANE_TARGETS = ("reminders", "cleanup", "all", "deliver_pending_messages", "send_booking_reminders",
                "cleanup_stale_bookings", "send_payment_reminders", "cleanup_old_notifications")  # fmt: skip
# Every job fires every PERIOD (a schedule in seconds, through tests/program.py) instead of every
# real minute: the same races between fires, replicas and lanes, without waiting for the clock.
PERIOD_SECONDS = 10
PERIOD = timedelta(seconds=PERIOD_SECONDS)
EVERY_PERIOD = f"*/{PERIOD_SECONDS} * * * * *"
BOUNDARIES = 3  # fires every daemon is up for
SETTLE_SECONDS = 5  # after the last boundary: its runs finish (they take about a second)
SEED_EVERY = timedelta(seconds=4)
SEED_BEFORE_BOUNDARY = timedelta(seconds=1)  # a round just before each fire: schedule and lanes race for it
DUE_PER_ROUND, STALE_PER_ROUND, DELETABLE_PER_ROUND = 8, 3, 60
DELETE_BATCH_SIZE = "20"  # several delete transactions per run
SEND_RATE = "100"  # per channel and process
POOL_PER_PROCESS = 5  # DATABASE_POOL_SIZE's default
MONITOR_SECONDS = 0.25
# Messages owed per booking: an event reminder to client and performer on both channels and a
# balance reminder to the client on both (deposit paid, event within 3 days); a cancellation
# notice to both on both.
DUE_MESSAGES, STALE_MESSAGES = 6, 4
SCENARIO = "4 pooler"


@pytest.fixture(scope="session")
def pooler(test_databases: DatabaseFactory) -> Iterator[PoolerSession]:
    """One pgbouncer for the session, in front of the suite's server, started on first use."""
    session = PoolerSession(test_databases.url)
    try:
        yield session
    finally:
        session.close()


async def started_pgbouncer(pooler: PoolerSession) -> PgBouncer:
    """The session's pgbouncer; fails the calling test when pgbouncer is not installed."""
    return await asyncio.to_thread(pooler.get)


@contextlib.asynccontextmanager
async def fresh_database(test_databases: DatabaseFactory, *, migrated: bool) -> AsyncIterator[str]:
    url = await test_databases.create(migrated=migrated)
    try:
        yield url
    finally:
        await test_databases.drop(url)


def database_name(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


# --- the control ----------------------------------------------------------------------------------


async def _transactions(engine: AsyncEngine, clients: int = 10, each: int = 30) -> list[str]:
    """Short transactions from concurrent clients, statements repeating; the errors they met."""
    errors: list[str] = []

    async def client(n: int) -> None:
        for k in range(each):
            try:
                async with engine.begin() as conn:
                    await conn.execute(text(f"SELECT CAST(:n AS int) + {k % 3}"), {"n": n})
            except DBAPIError as exc:
                errors.append(str(exc.orig or exc).splitlines()[0])

    await asyncio.gather(*(client(n) for n in range(clients)))
    return errors


@pytest.mark.timeout(60)
async def test_the_pooler_breaks_session_prepared_statements_but_not_the_daemon_s_engine(
    pooler: PoolerSession, test_databases: DatabaseFactory
) -> None:
    pgbouncer = await started_pgbouncer(pooler)
    async with fresh_database(test_databases, migrated=True) as url:
        pooled = to_asyncpg(pgbouncer.url(database_name(url)))
        naive = create_async_engine(pooled, pool_size=5, max_overflow=0)  # statement caches on
        try:
            naive_errors = await _transactions(naive)
        finally:
            await naive.dispose()
        ours = create_engine(pooled, pool_size=5)
        try:
            our_errors = await _transactions(ours)
        finally:
            await ours.dispose()
    assert naive_errors, "the pooler let prepared statements survive between transactions: not transaction pooling"
    assert all(prepared_statement_errors(error) for error in naive_errors), naive_errors[:3]
    assert our_errors == []
    record(f"{SCENARIO}: control", naive_engine_errors=len(naive_errors), daemon_engine_errors=0, transactions=300)


@pytest.mark.timeout(60)
async def test_a_cleanup_in_ranges_sized_by_density_leaves_no_session_state_behind_the_pooler(
    pooler: PoolerSession, test_databases: DatabaseFactory
) -> None:
    """The sized ranges (`jobs/batch_ranges.py`) set synchronous_commit for their own transaction:
    through the pooler every server connection is found as it was, and every old read row is gone."""
    pgbouncer = await started_pgbouncer(pooler)
    async with fresh_database(test_databases, migrated=True) as url:
        direct = create_engine(url, pool_size=1)
        try:
            async with direct.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                        "SELECT gen_random_uuid(), 'info', 't', 'm', g % 3 <> 0, now() - interval '40 days' "
                        "FROM generate_series(1, 3000) g"
                    )
                )
            async with direct.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE notifications"))
        finally:
            await direct.dispose()
        pooled = pgbouncer.url(database_name(url))
        app = build(Settings(_env_file=None, database_url=pooled, delete_batch_size=200), transports={})
        try:
            await app.prepare_database()
            result = await app.runner.run(JobName.CLEANUP_OLD_NOTIFICATIONS, trigger=Trigger.MANUAL)
        finally:
            await app.aclose()
        assert result.success, result.errors
        assert result.count == 2000
        assert result.details["batches"] > 2000 // 200, "no range was sized by density"
        ours = create_engine(to_asyncpg(pooled), pool_size=DEFAULT_POOL_SIZE)
        try:
            seen: set[str] = set()
            for _ in range(4 * DEFAULT_POOL_SIZE):
                async with ours.begin() as conn:
                    seen.add(str(await conn.scalar(text("SHOW synchronous_commit"))))
            left = await _scalar(ours, "SELECT count(*) FROM notifications WHERE is_read")
        finally:
            await ours.dispose()
    assert seen == {"on"}
    assert left == 0


async def _scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql))


# --- the scenario ---------------------------------------------------------------------------------


@dataclass
class Seeding:
    """What the scenario seeded, through the pooler like everything else."""

    due: list[Seeded] = field(default_factory=list)
    stale: list[Seeded] = field(default_factory=list)
    deletable: int = 0  # each of: read notifications, expired OTPs, audit rows past retention
    kept: int = 0  # each of: unread old notifications, old audit rows of a kept event type
    rounds: int = 0

    async def round(self, engine: AsyncEngine) -> None:
        now = datetime.now(UTC)
        self.due += await seed_bookings(engine, DUE_PER_ROUND, now=now)
        self.stale += await seed_bookings(engine, STALE_PER_ROUND, now=now, stale=True)
        async with engine.begin() as conn:
            params = {"n": DELETABLE_PER_ROUND}
            await conn.execute(
                text(
                    "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                    "SELECT gen_random_uuid(), 'info', 'old', 'old', g % 10 <> 0, now() - interval '40 days' "
                    "FROM generate_series(1, :n) g"
                ),
                params,
            )
            await conn.execute(
                text("INSERT INTO otp_codes (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, :n)"),
                params,
            )
            await conn.execute(
                text(
                    'INSERT INTO audit_logs (event_type, action, details, "timestamp") '
                    "SELECT CASE WHEN g % 10 = 0 THEN 'security' ELSE 'login' END, 'old', '{}'::jsonb, "
                    "now() - interval '100 days' FROM generate_series(1, :n) g"
                ),
                params,
            )
        self.deletable += DELETABLE_PER_ROUND * 9 // 10
        self.kept += DELETABLE_PER_ROUND // 10
        self.rounds += 1


@dataclass
class Lanes:
    """`--run-once` invocations back to back in LANES lanes until stopped."""

    env: dict[str, str]
    workdir: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: list[tuple[str, Finished]] = field(default_factory=list)
    _targets: Iterator[str] = field(default_factory=lambda: itertools.cycle(LANE_TARGETS))

    async def lane(self) -> None:
        while not self.stop.is_set():
            target = next(self._targets)
            done = await (await Cli.start("--run-once", target, env=self.env, cwd=self.workdir)).wait()
            self.finished.append((target, done))


def result_errors(body: Any) -> list[str]:
    """Every error string in a result JSON (one job's or a group's)."""
    if isinstance(body, dict):
        found = [str(error) for error in body.get("errors", [])]
        for value in body.values():
            if isinstance(value, dict):
                found += result_errors(value)
        return found
    return []


async def max_server_connections(monitor: AsyncEngine, database: str, stop: asyncio.Event, seen: list[int]) -> None:
    """Poll how many server connections the database has (all of them are pgbouncer's)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND backend_type = 'client backend'")
    while not stop.is_set():
        async with monitor.connect() as conn:
            seen.append(int(await conn.scalar(query, {"name": database}) or 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MONITOR_SECONDS)


def seeding_times(all_ready: datetime, boundaries: list[datetime]) -> list[datetime]:
    """Every SEED_EVERY from the start, and SEED_BEFORE_BOUNDARY before each boundary."""
    last = boundaries[-1] - SEED_BEFORE_BOUNDARY
    times = [boundary - SEED_BEFORE_BOUNDARY for boundary in boundaries]
    at = all_ready + SEED_EVERY
    while at < last - SEED_EVERY / 2:
        times.append(at)
        at += SEED_EVERY
    return sorted(times)


def boundary_after(moment: datetime) -> datetime:
    """The first fire of EVERY_PERIOD after `moment`."""
    seconds = (moment.second // PERIOD_SECONDS + 1) * PERIOD_SECONDS
    return moment.replace(second=0, microsecond=0) + timedelta(seconds=seconds)


def seconds_until(moment: datetime) -> float:
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def pooler_figures(log: str) -> tuple[int, int]:
    """Approximate transactions and queries PgBouncer forwarded, from its periodic stats lines."""
    period = 15
    xacts = queries = 0
    for match in re.finditer(r"stats: (\d+) xacts/s, (\d+) queries/s", log):
        xacts += int(match.group(1)) * period
        queries += int(match.group(2)) * period
    return xacts, queries


def expected_tally(seeding: Seeding) -> Counter[tuple[str, str, str]]:
    """Messages owed per (channel, recipient, booking reference)."""
    owed: Counter[tuple[str, str, str]] = Counter()
    for bookings, client_messages in ((seeding.due, 2), (seeding.stale, 1)):
        for booking in bookings:
            assert booking.client is not None and booking.performer is not None
            for channel, address in (("whatsapp", booking.client.phone), ("email", booking.client.email)):
                owed[channel, str(address), booking.reference] += client_messages
            for channel, address in (("whatsapp", booking.performer.phone), ("email", booking.performer.email)):
                owed[channel, str(address), booking.reference] += 1
    return owed


def accepted_tally(twilio: FakeTwilio, resend: FakeResend) -> tuple[Counter[tuple[str, str, str]], int, int]:
    """(messages per channel, recipient and reference; WhatsApp and email duplicates by content)."""
    reference = re.compile(r"FX-\d{6}")
    counts: Counter[tuple[str, str, str]] = Counter()
    whatsapp = Counter((message.to, message.body) for message in twilio.accepted)
    email = Counter((tuple(sent.to), sent.payload.get("subject"), sent.payload.get("text")) for sent in resend.accepted)
    for message in twilio.accepted:
        for found in set(reference.findall(message.body)):
            counts["whatsapp", message.to.removeprefix("whatsapp:"), found] += 1
    for sent in resend.accepted:
        for found in set(reference.findall(str(sent.payload.get("subject", "")))):
            for to in sent.to:
                counts["email", to, found] += 1
    return counts, sum(n - 1 for n in whatsapp.values()), sum(n - 1 for n in email.values())


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_replicas_and_run_once_through_pgbouncer_run_each_fire_once_and_send_each_message_once(
    pooler: PoolerSession, test_databases: DatabaseFactory, workdir: Path
) -> None:
    pgbouncer = await started_pgbouncer(pooler)
    started_at = time.monotonic()
    tz = ZoneInfo(ZONE)
    async with fresh_database(test_databases, migrated=False) as url, stand_in_providers() as (twilio, resend):
        name = database_name(url)
        direct = create_engine(url, pool_size=1)
        async with direct.begin() as conn:
            await create_platform_tables(conn)  # the platform's tables; the daemon's schema is theirs to create
        await direct.dispose()  # from here on, the database's only clients come through the pooler
        pooled = create_engine(to_asyncpg(pgbouncer.url(name)), pool_size=1)
        monitor = create_engine(with_database(test_databases.url, "postgres"), pool_size=1)
        seeding = Seeding()
        await seeding.round(pooled)

        env = cli_env(
            pgbouncer.url(name), twilio, resend,
            TIMEZONE=ZONE, HTTP_HOST="127.0.0.1", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
            SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT_SECONDS), WHATSAPP_MAX_PER_SECOND=SEND_RATE,
            EMAIL_MAX_PER_SECOND=SEND_RATE, DELETE_BATCH_SIZE=DELETE_BATCH_SIZE,
        )  # fmt: skip
        lanes = Lanes(env, workdir)
        monitoring, seen = asyncio.Event(), [0]
        watcher = asyncio.create_task(max_server_connections(monitor, name, monitoring, seen))
        try:
            every_job = {"schedules": {job.value: EVERY_PERIOD for job in JobName}}
            with daemons(REPLICAS, env, workdir, prefix="pooled", timings=every_job) as replicas:
                lane_tasks = [asyncio.create_task(lanes.lane()) for _ in range(LANES)]  # racing the migration too
                try:
                    for replica in replicas:
                        await replica.wait_ready()
                    all_ready = datetime.now(UTC)
                    first = boundary_after(all_ready)
                    boundaries = [first + n * PERIOD for n in range(BOUNDARIES)]
                    for at in seeding_times(all_ready, boundaries):
                        await asyncio.sleep(seconds_until(at))  # new work arrives on a clock, as bookings do
                        await seeding.round(pooled)
                    await asyncio.sleep(seconds_until(boundaries[-1] + timedelta(seconds=SETTLE_SECONDS)))
                finally:
                    lanes.stop.set()
                    await asyncio.gather(*lane_tasks)
                window_seconds = (datetime.now(UTC) - all_ready).total_seconds()

                async def settled() -> bool | None:
                    async with pooled.connect() as conn:
                        busy = await conn.scalar(
                            text("SELECT count(*) FROM flavor_scheduler.job_runs WHERE status = 'running'")
                        )
                    return True if busy == 0 else None

                await eventually(settled, within=60, what="every run to finish")
                for replica in replicas:
                    assert replica.process.poll() is None, (
                        f"{replica.name} died:\n{replica.log_path.read_text()[-3000:]}"
                    )
                await asyncio.gather(*(stop_gracefully(replica) for replica in replicas))
        finally:
            monitoring.set()
            await watcher
            await monitor.dispose()

        # Nothing left owed: a last run of everything through the pooler finds no work.
        final = await (await Cli.start("--run-once", "all", env=env, cwd=workdir)).wait()
        assert final.code == 0, final.stderr[-3000:]
        summary = final.json()["summary"]
        leftover = {key: summary[key] for key in ("staleBookings", "bookingReminders", "paymentReminders")}
        assert leftover == {
            "staleBookings": {"cancelled": 0, "errors": []},
            "bookingReminders": {"sent": 0, "errors": []},
            "paymentReminders": {"sent": 0, "errors": []},
        }
        await pooled.dispose()
        engine = create_engine(url, pool_size=2)
        try:
            outcome = await _verify(
                engine, tz, replicas, lanes, seeding, boundaries, twilio, resend, pgbouncer, [final]
            )
        finally:
            await engine.dispose()

    record(
        SCENARIO,
        replicas=REPLICAS,
        run_once_lanes=LANES,
        window_seconds=round(window_seconds, 1),
        minute_boundaries=len(boundaries),
        seeding_rounds=seeding.rounds,
        due_bookings=len(seeding.due),
        stale_bookings=len(seeding.stale),
        rows_deleted=3 * seeding.deletable,
        max_server_connections=max(seen),
        pool_size=DEFAULT_POOL_SIZE,
        client_connection_capacity=(REPLICAS + LANES) * POOL_PER_PROCESS + 1,  # and the seeding engine
        **outcome,
        seconds=round(time.monotonic() - started_at, 1),
    )
    assert max(seen) <= DEFAULT_POOL_SIZE, "more server connections than the pool has: not going through PgBouncer"


async def _verify(
    engine: AsyncEngine,
    tz: ZoneInfo,
    replicas: list[DaemonProcess],
    lanes: Lanes,
    seeding: Seeding,
    boundaries: list[datetime],
    twilio: FakeTwilio,
    resend: FakeResend,
    pgbouncer: PgBouncer,
    extra_runs: list[Finished],
) -> dict[str, Any]:
    """Check every invariant; returns the figures."""
    async with engine.connect() as conn:
        history = list(
            await conn.execute(
                text(
                    "SELECT job_name, slot, trigger, status, counts, started_at, finished_at "
                    "FROM flavor_scheduler.job_runs"
                )
            )
        )

    # Each scheduled fire ran at most once: one row and one job_started line per (job, slot) ...
    scheduled = Counter((row.job_name, row.slot) for row in history if row.trigger == "schedule")
    assert [key for key, count in scheduled.items() if count > 1] == []
    started_lines = Counter(
        (entry["job"], entry["slot"])
        for replica in replicas
        for entry in replica.events("job_started")
        if entry.get("slot") and entry.get("trigger") != "take_over"
    )
    assert [key for key, count in started_lines.items() if count > 1] == []
    assert set(started_lines) == set(scheduled)
    # ... and every fire while all were up either ran or found its job running (a manual run
    # holding it): skipped, as CONTRACT §7's `already_running` counts, never run twice.
    skipped_fires = []
    for at in boundaries:
        for job in JobName:
            if (job.value, slot_key(EVERY_PERIOD, tz, at)) in scheduled:
                continue
            overlapping = [
                row
                for row in history
                if row.job_name == job.value
                and row.started_at <= at + PERIOD
                and (row.finished_at is None or row.finished_at >= at)
            ]
            assert overlapping, f"{job.value} did not run for the fire at {at:%H:%M:%S} UTC and nothing held it"
            skipped_fires.append((job.value, at))
    skips_logged = sum(
        1 for replica in replicas for entry in replica.events("job_skipped") if entry.get("reason") == "already_running"
    )
    assert len(skipped_fires) <= skips_logged

    # Every run succeeded; the manual ones that met a running job said so and nothing else.
    assert {row.status for row in history} == {"success"}, Counter(row.status for row in history)
    refused = ran = 0
    for target, done in lanes.finished + [("all", run) for run in extra_runs]:
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if done.code == 0:
            ran += 1
            continue
        errors = result_errors(done.json())
        assert done.code == 1 and errors, f"--run-once {target}: exit {done.code}\n{done.stderr[-3000:]}"
        assert all("already running" in error for error in errors), (target, errors)
        refused += 1

    # Each owed message exactly once, every booking whole.
    owed = expected_tally(seeding)
    assert sum(owed.values()) == DUE_MESSAGES * len(seeding.due) + STALE_MESSAGES * len(seeding.stale)
    accepted, whatsapp_duplicates, email_duplicates = accepted_tally(twilio, resend)
    missing = owed - accepted
    extra = accepted - owed
    assert not missing, f"{sum(missing.values())} owed messages never sent"
    assert not extra, f"{sum(extra.values())} messages sent more than owed"
    assert (whatsapp_duplicates, email_duplicates) == (0, 0)
    assert set(await delivery_statuses(engine)) == {"sent"}
    reminded = await booking_parts(engine, seeding.due, "booking_reminder")
    cancelled = await booking_parts(engine, seeding.stale, "booking_cancelled")
    # FULL, except that the balance reminder writes a second `reminder_sent` audit row.
    assert set(reminded.values()) == {(1, 2, 2, 4)}
    assert set(cancelled.values()) == {FULL}
    async with engine.connect() as conn:
        payment_ledger, payment_notices, payment_deliveries = [
            await conn.scalar(text(sql))
            for sql in (
                "SELECT count(*) FROM flavor_scheduler.booking_reminders WHERE kind = 'payment_reminder'",
                "SELECT count(*) FROM notifications WHERE type = 'payment_reminder'",
                "SELECT count(*) FROM flavor_scheduler.deliveries WHERE kind = 'payment_reminder'",
            )
        ]
        left = tuple(
            [
                await conn.scalar(text(sql))
                for sql in (
                    "SELECT count(*) FROM notifications WHERE type = 'info' AND is_read",
                    "SELECT count(*) FROM notifications WHERE type = 'info' AND NOT is_read",
                    "SELECT count(*) FROM otp_codes",
                    "SELECT count(*) FROM audit_logs WHERE action = 'old' AND event_type = 'login'",
                    "SELECT count(*) FROM audit_logs WHERE action = 'old' AND event_type = 'security'",
                )
            ]
        )
    assert (payment_ledger, payment_notices, payment_deliveries) == (
        len(seeding.due),
        len(seeding.due),
        2 * len(seeding.due),
    )
    assert left == (0, seeding.kept, 0, 0, seeding.kept)

    # No prepared-statement error anywhere, no error line, no secret or contact detail.
    pooler_log = pgbouncer.log()
    outputs = {replica.name: replica.log_path.read_text(encoding="utf-8") for replica in replicas}
    outputs |= {f"--run-once {target} #{n}": done.stderr for n, (target, done) in enumerate(lanes.finished)}
    for source, output in outputs.items():
        assert prepared_statement_errors(output) == [], source
        assert "Traceback" not in output, source
        EXPOSURE.check(f"pooler scenario: {source}", output)
    assert prepared_statement_errors(pooler_log) == []
    EXPOSURE.check("pooler scenario: pgbouncer log", pooler_log)
    EXPOSURE.check("pooler scenario: errors stored by the daemon", await stored_errors(engine))
    error_lines = [
        entry for replica in replicas for entry in replica.events() if entry.get("level") in ("error", "critical")
    ]
    assert error_lines == []

    xacts, queries = pooler_figures(pooler_log)
    triggers = Counter(row.trigger for row in history)
    work: dict[str, Counter[str]] = {}
    for row in history:
        for key, count in (row.counts or {}).items():
            work.setdefault(row.trigger, Counter())[key] += int(count or 0)
    return {
        "fires_due": len(boundaries) * len(JobName),
        "fires_run": len(boundaries) * len(JobName) - len(skipped_fires),
        "fires_skipped_job_running": len(skipped_fires),
        "scheduled_runs_total": sum(scheduled.values()),
        "duplicate_fires": 0,
        "runs_by_trigger": dict(triggers),
        "work_by_trigger": {trigger: dict(counts) for trigger, counts in work.items()},
        "run_once_invocations": len(lanes.finished),
        "run_once_ran": ran - len(extra_runs),
        "run_once_refused_already_running": refused,
        "messages_owed": sum(owed.values()),
        "messages_sent": len(twilio.accepted) + len(resend.accepted),
        "whatsapp_duplicates": whatsapp_duplicates,
        "email_duplicates": email_duplicates,
        "prepared_statement_errors": 0,
        "error_log_lines": 0,
        "pooler_transactions_approx": xacts,
        "pooler_queries_approx": queries,
        "log_characters_scanned": sum(len(output) for output in outputs.values()) + len(pooler_log),
    }
