"""Crash safety: `--run-once send_booking_reminders` over 100 due bookings and a slow provider,
SIGKILLed at a random moment, then recovered; every owed message arrives, and a message is
sent twice only if it was in flight at the kill (counted per channel).

The provider accepts each message at once and answers 0.2 s later, so at any moment dozens
are accepted but unacknowledged: the ambiguous case. Instead of waiting out the leases a dead
run holds (120 s for deliveries, 60 s for runs), the killed program is built with one-second
leases (tests/program.py); recovery waits for them to run out (`leases_run_out`), then reruns
the job and `deliver_pending_messages` as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.providers import FakeProviderServer, FakeResend, Reply
from tests.faults.support import (
    EXPOSURE,
    FULL,
    Cli,
    assert_clean_exit,
    booking_parts,
    cli_env,
    delivery_statuses,
    leases_run_out,
    owed_messages,
    record,
    run_cli,
    seed_bookings,
    stand_in_providers,
    stored_errors,
    tally,
    wait_until,
)

# Each kill costs three program starts (about 8 s on two cores): the suite kills 6 times, at random
# moments; FAULTS_CRASH_RUNS=20 is the long run (FAULTS_SEED replays a run's kill moments). The
# invariants are the same for any count.
CRASH_RUNS = int(os.environ.get("FAULTS_CRASH_RUNS", "6"))
BOOKINGS = 100
MESSAGES = BOOKINGS * 4  # client and performer, WhatsApp and email
SEND_RATE = "200"  # per channel and second: a run sends its 400 messages in about 1 s
ANSWER_AFTER_SECONDS = 0.2  # the slow provider: accepts at once, answers this much later
EARLY_KILL_SHARE = 0.25  # kills at a random time in the first 2 s: start-up, planning, first sends
EARLY_KILL_WINDOW_SECONDS = 2.0


def keep_slow(server: FakeProviderServer, at_least: int) -> None:
    """Every send is accepted at once and answered ANSWER_AFTER_SECONDS later."""
    missing = at_least - server.pending_replies()
    if missing > 0:
        server.script(*[Reply.accept_late(ANSWER_AFTER_SECONDS)] * missing)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_at_random_moments_loses_no_message(
    database_url: str, engine: AsyncEngine, workdir: Path
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", str(random.randrange(2**32))))  # noqa: S311 - choosing kill times
    rng = random.Random(seed)  # noqa: S311
    started = time.monotonic()
    kills = before_commit = during_dispatch = in_flight_total = held_total = 0
    duplicates = {"whatsapp": 0, "email": 0}
    found_already_sent = 0
    async with stand_in_providers() as (twilio, resend):
        env = cli_env(database_url, twilio, resend, WHATSAPP_MAX_PER_SECOND=SEND_RATE, EMAIL_MAX_PER_SECOND=SEND_RATE)
        for run in range(CRASH_RUNS):
            keep_slow(twilio, 2 * MESSAGES)
            keep_slow(resend, 2 * MESSAGES)
            before = len(twilio.accepted) + len(resend.accepted)
            seeded = await seed_bookings(engine, BOOKINGS, now=datetime.now(UTC))
            references = [booking.reference for booking in seeded]

            def accepted_now(before: int = before) -> int:
                return len(twilio.accepted) + len(resend.accepted) - before

            cli = await Cli.start("--run-once", "send_booking_reminders", env=env, cwd=workdir, short_leases=True)
            if rng.random() < EARLY_KILL_SHARE:
                delay = rng.uniform(0, EARLY_KILL_WINDOW_SECONDS)
                plan = f"after {delay:.2f} s"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(cli.process.wait()), delay)
            else:
                target = rng.randrange(1, MESSAGES)
                plan = f"after {target} messages accepted"
                await wait_until(
                    lambda target=target, cli=cli: not cli.running or accepted_now() >= target,
                    within=60,
                    what=f"run {run}: {target} messages accepted",
                )
            if cli.running:
                cli.kill()
                kills += 1
            killed = await cli.wait()
            at_kill = accepted_now()
            during_dispatch += at_kill > 0
            async with engine.connect() as conn:
                recorded = await conn.scalar(
                    text("SELECT count(*) FROM flavor_scheduler.booking_reminders WHERE booking_id = ANY(:ids)"),
                    {"ids": [booking.id for booking in seeded]},
                )
                before_commit += recorded == 0
                sent_rows = await conn.scalar(
                    text(
                        "SELECT count(*) FROM flavor_scheduler.deliveries "
                        "WHERE status = 'sent' AND booking_reference = ANY(:refs)"
                    ),
                    {"refs": references},
                )
            in_flight_total += at_kill - int(sent_rows or 0)  # accepted by a provider, not recorded as sent

            held, _ = await leases_run_out(engine)
            held_total += held
            again = await run_cli("--run-once", "send_booking_reminders", env=env, cwd=workdir)
            assert_clean_exit(again, code=0)
            drained = await run_cli("--run-once", "deliver_pending_messages", env=env, cwd=workdir)
            assert_clean_exit(drained, code=0)
            found_already_sent += drained.stderr.count('"message_found_already_sent"')

            where = f"run {run} (seed {seed}, killed {plan}, exit {killed.code})"
            parts = await booking_parts(engine, seeded, "booking_reminder")
            assert set(parts.values()) == {FULL}, f"{where}: not every booking fully reminded"
            counts = tally(twilio, resend)
            assert counts.missing(owed_messages(seeded)) == [], f"{where}: owed messages never delivered"
            statuses = await delivery_statuses(engine)
            assert set(statuses) == {"sent"}, f"{where}: deliveries left {statuses}"

        counts = tally(twilio, resend)
        for channel in duplicates:
            duplicates[channel] = counts.duplicates(channel)
        EXPOSURE.check("crash scenario: errors stored by the daemon", await stored_errors(engine))

    record(
        "1 crash safety",
        runs=CRASH_RUNS,
        seed=seed,
        kills=kills,
        kills_before_reminders_recorded=before_commit,
        kills_after_first_send=during_dispatch,
        bookings=CRASH_RUNS * BOOKINGS,
        messages_owed=CRASH_RUNS * MESSAGES,
        accepted_unacknowledged_at_kill=in_flight_total,
        deliveries_left_sending=held_total,
        found_already_sent=found_already_sent,
        whatsapp_duplicates=duplicates["whatsapp"],
        email_duplicates=duplicates["email"],
        seconds=round(time.monotonic() - started, 1),
    )
    assert duplicates["email"] == 0, (
        f"an email went out twice despite its idempotency key (seed {seed}): {twice_accepted(resend)}"
    )
    assert duplicates["whatsapp"] <= in_flight_total, "more WhatsApp duplicates than messages in flight at kills"


def twice_accepted(resend: FakeResend, shown: int = 5) -> list[str]:
    """The first emails Resend accepted more than once: under which keys, and when (what a failure needs)."""
    accepted: dict[tuple[str, ...], list[str]] = {}
    for email in resend.accepted:
        what = (*email.to, str(email.payload.get("subject", "")))
        accepted.setdefault(what, []).append(f"{email.idempotency_key} at {email.accepted_at:%H:%M:%S.%f}")
    return [f"{what[-1]!r}: {', '.join(times)}" for what, times in accepted.items() if len(times) > 1][:shown]
