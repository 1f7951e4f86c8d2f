"""A channel claims its next messages while the current ones are still being sent
(`Limits.claim_ahead_seconds`). When that claim fails, the sends already in flight finish and
are recorded before the run reports the failure: nothing is left `sending` for a lease to free.

The failure is the database's own: a trigger refuses to let a sixth delivery be claimed.

A delivery's first claim is short (`Limits.first_claim_seconds_of_work`), so its first request
does not wait for a whole claim to be checked: a statement trigger logs what each claim took.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import SystemClock
from scheduler.limits import Limits
from scheduler.vocabulary import JobName, Trigger
from tests.factories import add_booking, add_client, add_performer, fetch
from tests.fakes.fixtures import stand_in_twilio, whatsapp_settings
from tests.fakes.providers import FakeTwilio

CLAIM = 5  # messages a claim takes
BOOKINGS = 12  # one WhatsApp message each: three claims' worth
LATENCY_SECONDS = 0.5  # the first claim's sends are still in flight when the second is made
SMALL_CLAIMS = Limits(min_claim=CLAIM, max_claim=CLAIM)

_REFUSE_THE_SIXTH_CLAIM = (
    "CREATE SEQUENCE flavor_scheduler.claimed_rows",
    f"""
    CREATE FUNCTION flavor_scheduler.refuse_the_sixth_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status = 'pending' AND NEW.status = 'sending'
           AND nextval('flavor_scheduler.claimed_rows') > {CLAIM} THEN
            RAISE EXCEPTION 'claims refused for this test';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER refuse_the_sixth_claim BEFORE UPDATE ON flavor_scheduler.deliveries
        FOR EACH ROW EXECUTE FUNCTION flavor_scheduler.refuse_the_sixth_claim()
    """,
)


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[tuple[App, FakeTwilio]]:
    async with stand_in_twilio(latency_seconds=LATENCY_SECONDS) as twilio:
        settings = whatsapp_settings(database_url, twilio)
        built = build(settings, limits=SMALL_CLAIMS, clock=SystemClock())
        await built.prepare_database()
        try:
            yield built, twilio
        finally:
            await built.aclose()


async def due_bookings(engine: AsyncEngine, *, then: tuple[str, ...]) -> None:
    """BOOKINGS bookings due a reminder, one WhatsApp message each; then the statements `then`."""
    for n in range(BOOKINGS):
        client = await add_client(engine, phone=f"0412 345 {n:03d}", email=None)
        performer = await add_performer(engine, phone=None, email=None)
        await add_booking(engine, client=client, performer=performer, event_date=datetime.now(UTC) + timedelta(hours=5))
    async with engine.begin() as conn:
        for statement in then:
            await conn.execute(text(statement))


async def test_a_claim_that_fails_lets_the_sends_in_flight_finish_and_be_recorded(
    engine: AsyncEngine, app: tuple[App, FakeTwilio]
) -> None:
    daemon, twilio = app
    await due_bookings(engine, then=_REFUSE_THE_SIXTH_CLAIM)

    result = await daemon.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)

    assert result.outcome == "error"
    assert any("claims refused for this test" in error for error in result.errors), result.errors
    # The first claim's five went out once each and are recorded as sent; the rest were never
    # claimed (the failed claim rolled back whole) and wait for the next run.
    assert len(twilio.requests_to("send")) == CLAIM
    rows = await fetch(engine, "SELECT status, count(*) AS n FROM flavor_scheduler.deliveries GROUP BY status")
    assert {row.status: row.n for row in rows} == {"sent": CLAIM, "pending": BOOKINGS - CLAIM}


_LOG_CLAIMS = (
    "CREATE TABLE flavor_scheduler.claim_log (seq bigserial, claimed int)",
    """
    CREATE FUNCTION flavor_scheduler.log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE taken int;
    BEGIN
        SELECT count(*) INTO taken FROM old_rows o JOIN new_rows n USING (id)
        WHERE o.status = 'pending' AND n.status = 'sending';
        IF taken > 0 THEN
            INSERT INTO flavor_scheduler.claim_log (claimed) VALUES (taken);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER log_claim AFTER UPDATE ON flavor_scheduler.deliveries
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION flavor_scheduler.log_claim()
    """,
)


async def test_the_first_claim_holds_a_short_while_of_sending_and_the_next_a_full_claim(
    database_url: str, engine: AsyncEngine
) -> None:
    """The first request leaves once `first_claim_seconds_of_work` of sending is claimed and
    checked, not a whole claim's worth; the next claim, made at once, is a full one."""
    limits = Limits(min_claim=1, first_claim_seconds_of_work=0.5, claim_seconds_of_work=10)
    rate = 10  # per second: a first claim of 5, then of 100
    await due_bookings(engine, then=_LOG_CLAIMS)

    async with stand_in_twilio() as twilio:
        settings = whatsapp_settings(database_url, twilio, whatsapp_max_per_second=rate)
        daemon = build(settings, limits=limits, clock=SystemClock())
        await daemon.prepare_database()
        try:
            result = await daemon.runner.run(JobName.SEND_BOOKING_REMINDERS, trigger=Trigger.MANUAL)
        finally:
            await daemon.aclose()

    assert result.success, result.errors
    claims = [row.claimed for row in await fetch(engine, "SELECT claimed FROM flavor_scheduler.claim_log ORDER BY seq")]
    assert claims == [5, BOOKINGS - 5]
    assert len(twilio.accepted) == BOOKINGS
