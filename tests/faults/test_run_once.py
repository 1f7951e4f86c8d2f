"""`--run-once` always runs (CONTRACT §3): alongside another run of the same job, right after a run
that was killed, and a signal stops it after the item in hand, handing everything back at once."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import fetch
from tests.fakes.providers import Reply
from tests.faults.support import (
    Cli,
    assert_clean_exit,
    cli_env,
    delivery_statuses,
    owed_messages,
    run_cli,
    seed_bookings,
    stand_in_providers,
    tally,
    wait_until,
)

BOOKINGS = 20
MESSAGES = BOOKINGS * 4  # client and performer, WhatsApp and email
SEND_RATE = "20"  # per channel and second: a run sends its messages in about 2 s


async def test_three_concurrent_run_once_all_run_and_each_message_goes_once(
    database_url: str, engine: AsyncEngine, workdir: Path
) -> None:
    seeded = await seed_bookings(engine, BOOKINGS, now=datetime.now(UTC))
    async with stand_in_providers(latency_seconds=0.05) as (twilio, resend):
        env = cli_env(database_url, twilio, resend, WHATSAPP_MAX_PER_SECOND=SEND_RATE, EMAIL_MAX_PER_SECOND=SEND_RATE)
        runs = [await Cli.start("--run-once", "send_booking_reminders", env=env, cwd=workdir) for _ in range(3)]
        done = await asyncio.gather(*(run.wait() for run in runs))
        counts = tally(twilio, resend)
    for finished in done:
        assert_clean_exit(finished, code=0)  # none refused with "already running"
        assert finished.json()["success"] is True
    assert sum(finished.json()["remindersSent"] for finished in done) == BOOKINGS
    assert counts.missing(owed_messages(seeded)) == []
    assert counts.duplicates("whatsapp") == counts.duplicates("email") == 0
    assert any('"running_alongside"' in finished.stderr for finished in done)  # and says so


async def test_a_rerun_right_after_a_kill_runs_at_once(database_url: str, engine: AsyncEngine, workdir: Path) -> None:
    seeded = await seed_bookings(engine, BOOKINGS, now=datetime.now(UTC))
    async with stand_in_providers() as (twilio, resend):
        twilio.script(*[Reply.never()] * MESSAGES)  # the first run hangs in its sends
        env = cli_env(database_url, twilio, resend)
        first = await Cli.start("--run-once", "send_booking_reminders", env=env, cwd=workdir)
        await wait_until(lambda: bool(twilio.requests_to("send")), within=30, what="a send to hang")
        first.kill()
        await first.wait()
        twilio.unscript()
        again = await run_cli("--run-once", "send_booking_reminders", env=env, cwd=workdir)
    assert_clean_exit(again, code=0)  # its lease (60 s) still running: not waited for
    assert "already running" not in again.stdout + again.stderr
    runs = await fetch(engine, "SELECT status FROM flavor_scheduler.job_runs ORDER BY started_at")
    assert [row.status for row in runs] == ["running", "success"]  # the dead one is left to expire
    assert len(seeded) == BOOKINGS


async def test_a_signal_stops_after_the_item_in_hand_and_hands_everything_back(
    database_url: str, engine: AsyncEngine, workdir: Path
) -> None:
    await seed_bookings(engine, BOOKINGS, now=datetime.now(UTC))
    async with stand_in_providers(latency_seconds=0.05) as (twilio, resend):
        env = cli_env(database_url, twilio, resend, WHATSAPP_MAX_PER_SECOND="4", EMAIL_MAX_PER_SECOND="4")
        cli = await Cli.start("--run-once", "send_booking_reminders", env=env, cwd=workdir)
        await wait_until(lambda: len(twilio.accepted) >= 3, within=30, what="messages to go out")
        cli.process.send_signal(signal.SIGINT)
        done = await cli.wait()
        sent_before_stop = len(twilio.accepted) + len(resend.accepted)
    assert_clean_exit(done, code=1)
    body = done.json()
    assert body["interrupted"] is True
    assert body["messages"]["sent"] == sent_before_stop < MESSAGES
    statuses = await delivery_statuses(engine)
    assert "sending" not in statuses  # every claimed message handed back at once
    assert statuses["sent"] == sent_before_stop
    (run,) = await fetch(engine, "SELECT status, lease_expires_at <= now() AS released FROM flavor_scheduler.job_runs")
    assert (run.status, run.released) == ("running", True)  # its lease given back: resumed at once
