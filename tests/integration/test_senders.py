"""One message, several senders, and time (CONTRACT §2, "Several replicas, crashes and skew"; the
Retry-After rule): a provider slower than the delivery lease, or a Retry-After wait longer than
it, while a second sender runs; a second sender whose clock is minutes off; forty answers of
`Retry-After: 0`. Through the real Twilio SDK against the stand-in server, two apps on one
database with second-long leases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock, SystemClock
from scheduler.limits import PRODUCTION, Limits
from scheduler.settings import Settings
from scheduler.vocabulary import JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.factories import add_booking, add_client, add_performer, execute, fetch
from tests.fakes.fixtures import stand_in_twilio, whatsapp_settings
from tests.fakes.providers import Reply
from tests.faults.support import wait_until

LEASE_SECONDS = 1.0
SHORT = Limits(delivery_lease_seconds=LEASE_SECONDS, run_lease_seconds=LEASE_SECONDS, run_lease_renew_seconds=0.25)
IN_FLIGHT_SECONDS = 3.0  # three leases' worth: without renewal a second sender would take it


class SkewedClock(SystemClock):
    """The real clock, read `offset` off: a replica whose NTP is broken."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset


@pytest.fixture
async def apps() -> AsyncIterator[list[App]]:
    """Apps the test builds; closed at the end."""
    built: list[App] = []
    try:
        yield built
    finally:
        for app in built:
            await app.aclose()


async def started(apps: list[App], settings: Settings, **options: Any) -> App:
    app = build(settings, **options)
    await app.prepare_database()
    apps.append(app)
    return app


async def whatsapp_only_booking(engine: AsyncEngine, event_date: datetime) -> dict[str, Any]:
    client = await add_client(engine, phone="0412 345 678", email=None)
    performer = await add_performer(engine, phone=None, email=None)
    return await add_booking(engine, client=client, performer=performer, event_date=event_date)


@pytest.mark.parametrize(
    ("scenario", "skew"),
    [
        ("slow", timedelta(0)),
        ("slow", timedelta(seconds=150)),  # the second sender's clock is 2.5 minutes ahead
        ("slow", timedelta(seconds=-150)),  # ... or behind
        ("retry_after", timedelta(0)),
        ("retry_after", timedelta(seconds=150)),
    ],
)
async def test_a_second_sender_never_takes_a_message_still_being_sent(
    database_url: str, engine: AsyncEngine, apps: list[App], scenario: str, skew: timedelta
) -> None:
    latency = IN_FLIGHT_SECONDS if scenario == "slow" else 0.0
    async with stand_in_twilio(latency_seconds=latency) as twilio:
        if scenario == "retry_after":  # the first sender waits out a Retry-After three leases long
            twilio.script(
                Reply.twilio_error(429, 20429, "Too Many Requests", {"Retry-After": f"{IN_FLIGHT_SECONDS:g}"})
            )
        settings = whatsapp_settings(database_url, twilio)
        first = await started(apps, settings, limits=SHORT, clock=SystemClock())
        second = await started(apps, settings, limits=SHORT, clock=SkewedClock(skew))
        await whatsapp_only_booking(engine, datetime.now(UTC) + timedelta(hours=5))

        began = time.monotonic()
        sending = asyncio.create_task(first.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL))
        # From the first sender's request on: before it, the message is pending, anyone's to take.
        await wait_until(lambda: bool(twilio.requests_to("send")) or sending.done(), within=30, what="the first send")
        second_results, abandoned_seen = [], []
        while not sending.done():  # the second sender keeps trying all the while
            second_results.append(await second.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.MANUAL))
            abandoned_seen += await second.history.abandoned()
            await asyncio.wait({sending}, timeout=0.2)
        result = sending.result()
        in_flight = time.monotonic() - began

    assert in_flight >= IN_FLIGHT_SECONDS > 2 * LEASE_SECONDS  # the send outlived its lease, renewed
    assert result.success and result.messages[MessageState.SENT] == 1
    assert len(second_results) >= 5
    assert sum(late.messages[MessageState.SENT] for late in second_results) == 0
    assert sum(len(late.errors) for late in second_results) == 0
    assert abandoned_seen == []  # nor was the first sender's run taken over
    assert len(twilio.accepted) == 1
    [row] = await fetch(engine, "SELECT status, claimed_by, attempts FROM flavor_scheduler.deliveries")
    assert (row.status, row.claimed_by) == ("sent", first.replica_id)


def _in_run_minimum(try_in_run: int) -> float:
    """The least a try within a run waits after the one before (1 s, 2 s ... with jitter down to half)."""
    return 0.5 * 2.0 ** (try_in_run - 2)


def _later_minimum(attempts_so_far: int) -> float:
    """The least a later run waits after `attempts_so_far` tries (30 s doubling, jitter down to half)."""
    return 0.5 * min(PRODUCTION.backoff_cap_seconds, PRODUCTION.backoff_base_seconds * 2.0 ** (attempts_so_far - 1))


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_forty_retry_after_zero_answers_are_forty_spaced_tries_and_no_give_up(
    database_url: str, engine: AsyncEngine, apps: list[App], retry_after: str
) -> None:
    clock = FrozenClock(NOW)
    answers = 40
    async with stand_in_twilio(now=clock.now) as twilio:
        unavailable = Reply.twilio_error(503, 20503, "Service Unavailable", {"Retry-After": retry_after})
        twilio.script(*[unavailable] * answers)
        app = await started(apps, whatsapp_settings(database_url, twilio), clock=clock)
        await whatsapp_only_booking(engine, NOW + timedelta(hours=23, minutes=30))

        runs = [await app.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)]
        tries_per_run = [len(twilio.requests_to("send"))]
        while runs[-1].messages[MessageState.SENT] == 0 and len(runs) < 30:
            [row] = await fetch(engine, "SELECT status, next_attempt_at FROM flavor_scheduler.deliveries")
            assert row.status == "pending"  # never failed: not by a count, and not yet by time
            clock.set(row.next_attempt_at)
            runs.append(await app.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.MANUAL))
            tries_per_run.append(len(twilio.requests_to("send")) - sum(tries_per_run))
        requests = twilio.requests_to("send")

    assert runs[-1].messages[MessageState.SENT] == 1 and len(twilio.accepted) == 1
    assert len(requests) == answers + 1
    assert all(late.messages[MessageState.RETRYING] == 1 for late in runs[:-1])  # each an error naming the retry
    assert clock.now() - NOW < timedelta(hours=24)  # all within MESSAGE_MAX_RETRY_HOURS
    # Every wait at least the normal backoff, never back to back.
    attempts = 0
    for run_tries in tries_per_run:
        for try_in_run in range(1, run_tries + 1):
            attempts += 1
            if attempts == 1:
                continue
            gap = (requests[attempts - 1].received_at - requests[attempts - 2].received_at).total_seconds()
            least = _in_run_minimum(try_in_run) if try_in_run > 1 else _later_minimum(attempts - 1)
            assert gap >= least, f"try {attempts} came {gap:.2f} s after the one before (at least {least:g} s)"
    [row] = await fetch(engine, "SELECT status, attempts FROM flavor_scheduler.deliveries")
    assert (row.status, row.attempts) == ("sent", answers + 1)


async def test_a_message_whose_outcome_was_lost_is_not_kept_alive_by_its_sender_s_next_sends(
    database_url: str, engine: AsyncEngine, apps: list[App]
) -> None:
    """A send whose outcome could not be written (the database went away) stays 'sending' until its
    lease runs out, then is resumed, checked for the earlier attempt. The process that claimed it
    goes on sending other messages and renewing their claims: those renewals must not reach it."""
    async with stand_in_twilio() as twilio:
        settings = whatsapp_settings(database_url, twilio)
        first = await started(apps, settings, limits=SHORT, clock=SystemClock())
        second = await started(apps, settings, limits=SHORT, clock=SystemClock())
        lost = await whatsapp_only_booking(engine, datetime.now(UTC) + timedelta(hours=5))
        assert (await first.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)).success
        # Sent, and its outcome lost: still the first sender's, its lease about to run out.
        await execute(
            engine,
            "UPDATE flavor_scheduler.deliveries SET status = 'sending', sent_at = NULL,"
            " provider_message_id = NULL, claimed_by = :claimer,"
            " lease_expires_at = now() + interval '200 milliseconds' WHERE booking_id = :booking",
            claimer=first.replica_id,
            booking=lost["id"],
        )

        twilio.latency_seconds = IN_FLIGHT_SECONDS  # the first sender's next message is slow
        await whatsapp_only_booking(engine, datetime.now(UTC) + timedelta(hours=6))
        sending = asyncio.create_task(first.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL))
        await wait_until(lambda: _renewed(engine, first.replica_id), within=30, what="the slow send's claim renewed")
        [orphan] = await fetch(
            engine,
            "SELECT lease_expires_at < now() AS expired FROM flavor_scheduler.deliveries WHERE booking_id = :booking",
            booking=lost["id"],
        )
        assert orphan.expired, "the lost message's lease was renewed with the slow one's"
        twilio.latency_seconds = 0.0
        resumed = await second.runner.run(JobName.DELIVER_PENDING_MESSAGES, trigger=Trigger.MANUAL)
        assert not sending.done()  # resumed while its first sender is still busy
        assert (await sending).success

    assert resumed.success and resumed.messages[MessageState.SENT] == 1
    assert len(twilio.accepted) == 2  # the earlier attempt was found, not sent again
    rows = await fetch(engine, "SELECT status, claimed_by FROM flavor_scheduler.deliveries ORDER BY created_at")
    assert [(row.status, row.claimed_by) for row in rows] == [("sent", second.replica_id), ("sent", first.replica_id)]


async def _renewed(engine: AsyncEngine, claimer: str) -> bool:
    """A claim of `claimer`'s in flight whose lease was extended since it was claimed."""
    rows = await fetch(
        engine,
        "SELECT 1 FROM flavor_scheduler.deliveries WHERE status = 'sending' AND claimed_by = :claimer"
        " AND lease_expires_at > updated_at + make_interval(secs => :lease + 0.2)",
        claimer=claimer,
        lease=LEASE_SECONDS,
    )
    return bool(rows)
