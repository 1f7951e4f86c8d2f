"""Database faults: a connection lost mid-batch three ways (terminated by the server, a statement
timeout, silently dropped by a middlebox), a long transaction holding booking rows, and the
server stopped mid-run and restarted. The process survives with an error result, no booking is
left half-cancelled or half-reminded, and the next runs complete the work.

Jobs run in this process (the runner is what a daemon calls) with recording transports, except
the restart, which runs the CLI against a server of its own. Batch sizes are cut from 100/500 to
25 so that a fault can land in the second batch with few bookings; the code path is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import scheduler.db.engine as engine_module
from scheduler.app import App, build
from scheduler.db import bounded_connection
from scheduler.db.engine import create_engine
from scheduler.db.tables import notifications
from scheduler.jobs.result import JobResult
from scheduler.limits import Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.vocabulary import Channel, JobName, Trigger
from tests.database import DatabaseFactory
from tests.fakes.providers import Reply
from tests.faults.faults_sql import (
    HOLD_SECONDS,
    held_backend,
    hold_statement,
    idle_in_transaction,
    set_database_option,
    terminate,
    waiting_mid_statement,
)
from tests.faults.network import BlackholeProxy
from tests.faults.servers import OwnServer
from tests.faults.support import (
    EXPOSURE,
    FULL,
    NOTHING,
    Cli,
    Seeded,
    assert_clean_exit,
    booking_parts,
    cli_env,
    delivery_statuses,
    faults_settings,
    finished_within,
    leases_run_out,
    owed_messages,
    product_logging,
    record,
    run_cli,
    seed_bookings,
    stand_in_providers,
    stored_errors,
    tally,
    wait_until,
)

BATCH = 25
BOOKINGS = 40  # a full first batch and a second of 15
READ_NOTIFICATIONS = 400
PURGE_BATCH = 100
DROPPED_CONNECTION_BOUND_SECONDS = 2.0  # COMMAND_TIMEOUT and IDLE_IN_TRANSACTION timeouts, cut from 60 s


@dataclass(frozen=True)
class Scenario:
    job: JobName
    kind: str  # booking_parts kind, or "purge"
    table: str
    event: str
    condition: str  # true only in the second batch's transaction


SCENARIOS = {
    "cancel": Scenario(
        JobName.CLEANUP_STALE_BOOKINGS,
        "booking_cancelled",
        "audit_logs",
        "INSERT",
        f"(SELECT count(*) FROM bookings WHERE status = 'cancelled') > {BATCH}",
    ),
    "remind": Scenario(
        JobName.SEND_BOOKING_REMINDERS,
        "booking_reminder",
        "audit_logs",
        "INSERT",
        f"(SELECT count(*) FROM flavor_scheduler.booking_reminders) > {BATCH}",
    ),
    "purge": Scenario(
        JobName.CLEANUP_OLD_NOTIFICATIONS,
        "purge",
        "notifications",
        "DELETE",
        "(SELECT count(*) FROM notifications WHERE is_read AND message = 'old') < "
        f"{READ_NOTIFICATIONS - 2 * PURGE_BATCH}",
    ),
}


# Leases of a second (production: 120 s for deliveries, 60 s for runs): a reminder run sends its
# first batch while it records the second, so a fault there may leave a send in flight whose
# outcome could not be recorded, resumed once its lease runs out, as after any fault mid-send; and
# a run whose end could not be written on a lost connection is taken over after its lease.
SMALL_BATCHES = Limits(
    cancel_batch_size=BATCH,
    reminder_batch_size=BATCH,
    delivery_lease_seconds=1.0,
    run_lease_seconds=1.0,
    run_lease_renew_seconds=0.25,
)


@pytest.fixture
def recorders() -> dict[Channel, RecordingTransport]:
    return {channel: RecordingTransport(channel) for channel in Channel}


@asynccontextmanager
async def running_app(database_url: str, transports: dict[Channel, RecordingTransport]) -> AsyncIterator[App]:
    settings = faults_settings(
        database_url, whatsapp_max_per_second=1000, email_max_per_second=1000, delete_batch_size=PURGE_BATCH
    )
    app = build(settings, transports=dict(transports), limits=SMALL_BATCHES)
    await app.prepare_database()
    try:
        yield app
    finally:
        await app.aclose()


async def seed(engine: AsyncEngine, scenario: Scenario, now: datetime) -> list[Seeded]:
    if scenario.kind == "purge":
        old, recent = now - timedelta(days=40), now - timedelta(days=1)
        rows = [(True, old, "old")] * READ_NOTIFICATIONS
        rows += [(False, old, "unread")] * 20 + [(True, recent, "recent")] * 20  # never deleted
        values = [
            {"id": uuid4(), "user_id": uuid4(), "type": "info", "title": "t", "message": message}
            | {"is_read": read, "created_at": created}
            for read, created, message in rows
        ]
        async with engine.begin() as conn:
            # Batches found exactly (no statistics, `jobs/batch_ranges.py`), so the fault is met
            # in the third batch of PURGE_BATCH rows.
            await conn.execute(text("ALTER TABLE notifications SET (autovacuum_enabled = false)"))
            await conn.execute(notifications.insert(), values)
        return []
    return await seed_bookings(engine, BOOKINGS, now=now, stale=scenario.kind == "booking_cancelled")


async def notifications_left(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT message, count(*) FROM notifications GROUP BY message"))
        return {row[0]: int(row[1]) for row in rows}


def delivered(transports: dict[Channel, RecordingTransport]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for channel, transport in transports.items():
        for sent in transport.accepted:
            counts[channel.value, sent.message.to, sent.message.booking_reference] += 1
    return counts


async def run(app: App, job: JobName) -> JobResult:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


@pytest.mark.parametrize("fault", ["terminated", "statement_timeout", "dropped_silently"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_connection_lost_mid_batch(
    name: str,
    fault: str,
    database_url: str,
    engine: AsyncEngine,
    recorders: dict[Channel, RecordingTransport],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = SCENARIOS[name]
    now = datetime.now(UTC)
    seeded = await seed(engine, scenario, now)
    # A silently dropped connection is one whose answer never arrives: the statement itself ends
    # soon. The other faults end a statement that would otherwise go on for HOLD_SECONDS.
    hold = 1.0 if fault == "dropped_silently" else HOLD_SECONDS
    await hold_statement(engine, table=scenario.table, event=scenario.event, condition=scenario.condition, seconds=hold)
    app_url = database_url
    proxy: BlackholeProxy | None = None
    async with contextlib.AsyncExitStack() as stack:
        if fault == "statement_timeout":
            await set_database_option(engine, "statement_timeout", "1s")
        if fault == "dropped_silently":
            # For the app's engine only, undone before the test's own teardown (DROP DATABASE on a
            # loaded server may take longer than the cut timeout).
            patched = stack.enter_context(monkeypatch.context())
            patched.setattr(engine_module, "COMMAND_TIMEOUT_SECONDS", DROPPED_CONNECTION_BOUND_SECONDS)
            patched.setattr(bounded_connection, "IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", DROPPED_CONNECTION_BOUND_SECONDS)
            proxy = await stack.enter_async_context(BlackholeProxy(database_url))
            app_url = proxy.url()
        app = await stack.enter_async_context(running_app(app_url, recorders))
        logs = stack.enter_context(product_logging(app.settings))
        task = asyncio.create_task(run(app, scenario.job))
        await wait_until(lambda: held_backend(engine), within=20, what="the held statement")
        held_at = time.monotonic()
        if fault == "terminated":
            pid = await held_backend(engine)
            assert pid is not None and await terminate(engine, pid)
        elif fault == "dropped_silently":
            assert proxy is not None and proxy.blackhole() >= 1
        faulted = await finished_within(task, within=30, what="the faulted run")
        to_error = time.monotonic() - held_at
        lost_transaction_seconds = 0.0
        left_mid_statement = 0
        if fault == "dropped_silently":
            # Our side gave up; the server's side of the lost connection still holds its
            # transaction until idle_in_transaction_session_timeout ends it.
            lost_transaction_seconds = await wait_until(
                lambda: _none_idle(engine), within=15, what="the lost transaction to be ended by the server"
            )
            # A reminder run sends its first batch while it records the second: a claim of those
            # sends may have been cut off between its messages. Its session waits for the rest,
            # its rows locked, until the connection closes: the middlebox closes them now.
            left_mid_statement = await waiting_mid_statement(engine)
            assert proxy is not None
            proxy.close_silenced()
            await wait_until(
                lambda: _none_mid_statement(engine), within=15, what="the sessions the middlebox closed to end"
            )
        after_fault = await booking_parts(engine, seeded, scenario.kind) if seeded else {}
        purged_at_fault = await notifications_left(engine)
        left_sending, _ = await leases_run_out(engine)
        again = await run(app, scenario.job)
        drained = await run(app, JobName.DELIVER_PENDING_MESSAGES)
        EXPOSURE.check(f"{name}/{fault}: logs", logs.getvalue())

    where = f"{name}, {fault}"
    assert faulted.errors, f"{where}: the faulted run reported no error"
    if fault == "dropped_silently":
        # The statement's wait, then closing the dead connection (SQLAlchemy gives that 2 s). A
        # reminder run also waits for its first batch's sends, whose outcome may be being
        # written on a connection dropped too: the same wait and close again, after it.
        waits = 2 if scenario.kind == "booking_reminder" else 1
        bound = waits * (DROPPED_CONNECTION_BOUND_SECONDS + 2) + 2
        assert to_error <= bound, f"{where}: {to_error:.1f} s to the error"
    assert all("\n" not in error for error in faulted.errors)
    if scenario.kind == "booking_reminder":
        # The second batch's recording met the fault: said first, whatever else failed with it.
        assert faulted.errors[0].startswith("recording booking_reminders failed: "), f"{where}: {faulted.errors}"
        # The first batch's bookings were reminded (in-app at least), whatever became of its sends.
        assert faulted.count == BATCH, f"{where}: {faulted.count}"
    assert again.success, f"{where}: the next run failed: {again.errors}"
    assert drained.success, f"{where}: delivering what was left failed: {drained.errors}"
    EXPOSURE.check(f"{where}: results", "\n".join(faulted.errors + again.errors + drained.errors))
    EXPOSURE.check(f"{where}: stored errors", await stored_errors(engine))

    if scenario.kind == "purge":
        # Two batches committed before the fault, the third rolled back whole.
        assert purged_at_fault["old"] == READ_NOTIFICATIONS - 2 * PURGE_BATCH, f"{where}: {purged_at_fault}"
        assert await notifications_left(engine) == {"unread": 20, "recent": 20}
    else:
        # Right after the fault: the first batch whole, the second not at all, nothing in between.
        assert Counter(after_fault.values()) == {FULL: BATCH, NOTHING: BOOKINGS - BATCH}, f"{where}: {after_fault}"
        # After the next run: every booking whole, every message delivered exactly once.
        parts = await booking_parts(engine, seeded, scenario.kind)
        assert set(parts.values()) == {FULL}, f"{where}: {Counter(parts.values())}"
        counts = delivered(recorders)
        assert set(counts) == owed_messages(seeded), f"{where}: delivered and owed differ"
        assert max(counts.values()) == 1, f"{where}: a message delivered twice"
        assert await delivery_statuses(engine) == {"sent": 4 * BOOKINGS}
    record(
        f"2 database: {name} / {fault}",
        seconds_to_error=round(to_error, 2),
        lost_transaction_left_open_seconds=round(lost_transaction_seconds, 2),
        sends_left_in_flight=left_sending,
        sessions_left_mid_statement=left_mid_statement,
        error=faulted.errors[0][:200],
    )


async def _none_idle(engine: AsyncEngine) -> bool:
    return await idle_in_transaction(engine) == 0


async def _none_mid_statement(engine: AsyncEngine) -> bool:
    return await waiting_mid_statement(engine) == 0


async def test_rows_held_by_a_long_transaction_are_skipped_then_done(
    database_url: str, engine: AsyncEngine, recorders: dict[Channel, RecordingTransport]
) -> None:
    now = datetime.now(UTC)
    stale = await seed_bookings(engine, 20, now=now, stale=True)
    due = await seed_bookings(engine, 10, now=now)
    locked, paying = stale[:6], stale[6]
    async with engine.connect() as elsewhere, running_app(database_url, recorders) as app:
        # The platform, elsewhere: a long transaction holding six stale bookings and five due
        # ones, and a deposit landing on a seventh stale booking, not committed yet.
        await elsewhere.execute(
            text("SELECT id FROM bookings WHERE id = ANY(:ids) FOR UPDATE"),
            {"ids": [booking.id for booking in [*locked, *due[:5]]]},
        )
        await elsewhere.execute(
            text("UPDATE bookings SET payment_status = 'deposit_paid' WHERE id = :id"), {"id": paying.id}
        )
        started = time.monotonic()
        async with asyncio.timeout(20):
            cancelled = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
            reminded = await run(app, JobName.SEND_BOOKING_REMINDERS)
        elapsed = time.monotonic() - started
        assert cancelled.success and reminded.success, cancelled.errors + reminded.errors
        parts = await booking_parts(engine, stale, "booking_cancelled")
        held = {booking.reference for booking in [*locked, paying]}
        assert {ref for ref, found in parts.items() if found == NOTHING} == held
        assert Counter(parts.values()) == {FULL: 13, NOTHING: 7}
        # Reading is never blocked: the held due bookings are reminded all the same.
        assert set((await booking_parts(engine, due, "booking_reminder")).values()) == {FULL}
        await elsewhere.commit()

        again = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
    assert again.success and again.count == len(locked), again.errors
    parts = await booking_parts(engine, stale, "booking_cancelled")
    assert parts[paying.reference] == NOTHING  # its deposit arrived: not stale any more
    assert Counter(parts.values()) == {FULL: 19, NOTHING: 1}
    record(
        "2 database: rows held by a long transaction",
        seconds_for_both_jobs=round(elapsed, 2),
        skipped_then_cancelled=len(locked),
        deposit_in_flight_kept=1,
    )


async def test_a_table_lock_elsewhere_fails_the_run_in_bounded_time(
    database_url: str,
    engine: AsyncEngine,
    recorders: dict[Channel, RecordingTransport],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    stale = await seed_bookings(engine, 10, now=now, stale=True)
    with monkeypatch.context() as patched:  # for the app's engine only, as above
        patched.setattr(engine_module, "COMMAND_TIMEOUT_SECONDS", DROPPED_CONNECTION_BOUND_SECONDS)
        async with running_app(database_url, recorders) as app:
            async with engine.connect() as elsewhere:
                # A migration of the platform's, say: the whole table locked for longer than we wait.
                await elsewhere.execute(text("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE"))
                started = time.monotonic()
                async with asyncio.timeout(30):
                    blocked = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
                elapsed = time.monotonic() - started
                await elsewhere.rollback()
            again = await run(app, JobName.CLEANUP_STALE_BOOKINGS)
    assert blocked.errors and not blocked.count
    assert elapsed < DROPPED_CONNECTION_BOUND_SECONDS * 3, f"the run waited {elapsed:.1f} s"
    assert again.success and again.count == len(stale), again.errors
    assert set((await booking_parts(engine, stale, "booking_cancelled")).values()) == {FULL}
    record(
        "2 database: table locked elsewhere",
        command_timeout_seconds=DROPPED_CONNECTION_BOUND_SECONDS,
        seconds_to_error=round(elapsed, 2),
        error=blocked.errors[0][:200],
    )


# PostgreSQL's answer to a statement's Parse and Describe: ParseComplete, then ParameterDescription.
PARSE_ANSWERED = b"1\x00\x00\x00\x04t"


async def test_a_connection_silenced_between_a_statement_s_round_trips_fails_the_run_in_bounded_time(
    database_url: str,
    engine: AsyncEngine,
    recorders: dict[Channel, RecordingTransport],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A statement is more than one round trip (its Parse and Describe answered, then its Bind and
    Execute). A flow lost between them ends in the command timeout like any other, never in a wait
    with no bound: asyncpg closes a named statement the next time the connection prepares one,
    and waits for that answer without a timeout."""
    now = datetime.now(UTC)
    stale = await seed_bookings(engine, 10, now=now, stale=True)
    async with contextlib.AsyncExitStack() as stack:
        patched = stack.enter_context(monkeypatch.context())  # for the app's engine only
        patched.setattr(engine_module, "COMMAND_TIMEOUT_SECONDS", DROPPED_CONNECTION_BOUND_SECONDS)
        patched.setattr(bounded_connection, "IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", DROPPED_CONNECTION_BOUND_SECONDS)
        proxy = await stack.enter_async_context(BlackholeProxy(database_url))
        # Production leases: no renewal runs during the run, so the silenced statement is the run's own.
        settings = faults_settings(proxy.url(), whatsapp_max_per_second=1000, email_max_per_second=1000)
        app = build(settings, transports=dict(recorders))
        stack.push_async_callback(app.aclose)
        await app.prepare_database()
        warm = await run(app, JobName.CLEANUP_EXPIRED_OTPS)  # the pooled connections have run statements
        assert warm.success, warm.errors
        proxy.silence_after(PARSE_ANSWERED)
        started = time.monotonic()
        faulted = await finished_within(
            asyncio.create_task(run(app, JobName.CLEANUP_STALE_BOOKINGS)),
            within=30,
            what="the run silenced mid-statement",
        )
        elapsed = time.monotonic() - started
        assert proxy.silenced == 1
        proxy.close_silenced()
        await leases_run_out(engine)
        again = await run(app, JobName.CLEANUP_STALE_BOOKINGS)

    # The command timeout, then closing the dead connection (SQLAlchemy gives that 2 s), and room.
    bound = DROPPED_CONNECTION_BOUND_SECONDS + 2 + 2
    assert elapsed <= bound, f"{elapsed:.1f} s to the error"
    assert faulted.errors and "TimeoutError" in faulted.errors[0], faulted.errors
    assert again.success and again.count + faulted.count == len(stale), again.errors
    assert set((await booking_parts(engine, stale, "booking_cancelled")).values()) == {FULL}
    record(
        "2 database: silenced between a statement's round trips",
        seconds_to_error=round(elapsed, 2),
        error=faulted.errors[0][:200],
    )


async def test_closing_the_app_with_connections_dropped_silently_ends_in_bounded_time(
    database_url: str, recorders: dict[Channel, RecordingTransport]
) -> None:
    """At shutdown the pool closes its connections, each waiting for the server to hang up. Those a
    middlebox dropped never answer: each is abandoned after its close timeout, not waited for."""
    async with BlackholeProxy(database_url) as proxy:
        app = build(faults_settings(proxy.url()), transports=dict(recorders))
        await app.prepare_database()
        assert (await run(app, JobName.CLEANUP_EXPIRED_OTPS)).success  # connections in the pool
        dropped = proxy.blackhole()
        assert dropped >= 1
        started = time.monotonic()
        await finished_within(asyncio.create_task(app.aclose()), within=30, what="closing the app")
        elapsed = time.monotonic() - started
    bound = dropped * bounded_connection.CLOSE_TIMEOUT_SECONDS + 2  # closed one after another, and room
    assert elapsed <= bound, f"{elapsed:.1f} s to close {dropped} connections"
    record(
        "2 database: closed with connections dropped silently", connections=dropped, seconds_to_close=round(elapsed, 2)
    )


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    with OwnServer() as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_server_stopped_mid_run_and_restarted(own_server: OwnServer, workdir: Path) -> None:
    factory = DatabaseFactory(own_server.url)
    await asyncio.to_thread(factory.create_template)
    database_url = await factory.create()
    engine = create_engine(database_url, pool_size=2)
    try:
        seeded = await seed_bookings(engine, 100, now=datetime.now(UTC))
        async with stand_in_providers() as (twilio, resend):
            for server in (twilio, resend):
                server.script(*[Reply.accept_late(0.2)] * 800)
            env = cli_env(database_url, twilio, resend, WHATSAPP_MAX_PER_SECOND="100", EMAIL_MAX_PER_SECOND="100")
            cli = await Cli.start("--run-once", "send_booking_reminders", env=env, cwd=workdir, short_leases=True)
            await wait_until(
                lambda: not cli.running or len(twilio.accepted) + len(resend.accepted) >= 100,
                within=60,
                what="a quarter of the messages sent",
            )
            assert cli.running, "the run ended before the server could be stopped"
            await engine.dispose()
            stopped = time.monotonic()
            await asyncio.to_thread(own_server.stop)
            interrupted = await cli.wait(60)
            seconds_to_exit = time.monotonic() - stopped
            assert_clean_exit(interrupted, code=1)
            body = interrupted.json()
            assert body["success"] is False and body["errors"], body
            assert all("database" in error.lower() for error in body["errors"]), body["errors"]

            down = await run_cli("--run-once", "send_booking_reminders", env=env, cwd=workdir)
            assert_clean_exit(down, code=1)
            assert "database unreachable" in down.stderr

            await asyncio.to_thread(own_server.start)
            held, runs = await leases_run_out(engine)
            again = await run_cli("--run-once", "send_booking_reminders", env=env, cwd=workdir)
            assert_clean_exit(again, code=0)
            drained = await run_cli("--run-once", "deliver_pending_messages", env=env, cwd=workdir)
            assert_clean_exit(drained, code=0)

            parts = await booking_parts(engine, seeded, "booking_reminder")
            assert set(parts.values()) == {FULL}
            counts = tally(twilio, resend)
            assert counts.missing(owed_messages(seeded)) == []
            assert await delivery_statuses(engine) == {"sent": 400}
            assert counts.duplicates("email") == 0
            EXPOSURE.check("server restart: stored errors", await stored_errors(engine))
    finally:
        await engine.dispose()
        if own_server.running:
            await factory.drop(database_url)
            await asyncio.to_thread(factory.drop_template)
    record(
        "2 database: server stopped mid-run, restarted",
        seconds_from_stop_to_exit=round(seconds_to_exit, 2),
        exit_code=interrupted.code,
        deliveries_left_sending=held,
        runs_left_running=runs,
        whatsapp_duplicates=counts.duplicates("whatsapp"),
        email_duplicates=counts.duplicates("email"),
    )
