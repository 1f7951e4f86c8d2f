"""Batched email (EMAIL_BATCH_SIZE): due emails go many to a request through Resend's
/emails/batch, each exactly once: the same batch under the same Idempotency-Key on every retry (a
500 after acceptance sends nothing twice, within a run or across runs), Retry-After honoured on a
429, one invalid address narrowed down to fail alone; EMAIL_BATCH_SIZE=1 keeps /emails. The real
resend SDK against the stand-in server, on the test's clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.limits import Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings
from scheduler.vocabulary import Channel, JobName, MessageState, Trigger
from tests.conftest import NOW
from tests.database import to_libpq
from tests.factories import add_booking, add_client, add_performer, fetch
from tests.fakes.fixtures import RESEND_API_KEY
from tests.fakes.providers import FakeResend, Reply
from tests.faults.support import wait_until


@pytest.fixture
async def resend(clock: FrozenClock) -> AsyncIterator[FakeResend]:
    async with FakeResend(api_key=RESEND_API_KEY, now=clock.now) as server:  # arrivals on the test's clock
        yield server


SERVER_ERROR = {"statusCode": 500, "name": "internal_server_error", "message": "scripted"}


async def _app(database_url: str, resend: FakeResend, clock: FrozenClock, **extra: Any) -> App:
    settings = Settings(
        _env_file=None, database_url=to_libpq(database_url), resend_api_key=RESEND_API_KEY,
        resend_api_url=resend.url, **extra,
    )  # fmt: skip
    app = build(settings, clock=clock)  # email only: WhatsApp is off, its messages skipped
    await app.prepare_database()
    return app


@pytest.fixture
async def batched(database_url: str, resend: FakeResend, clock: FrozenClock) -> AsyncIterator[App]:
    app = await _app(database_url, resend, clock, email_batch_size=10)
    try:
        yield app
    finally:
        await app.aclose()


async def _bookings(engine: AsyncEngine, count: int, *, hours: int = 5) -> list[dict[str, Any]]:
    """`count` bookings, each owing two emails (client and performer)."""
    return [await add_booking(engine, event_date=NOW + timedelta(hours=hours)) for _ in range(count)]


async def _run(app: App, job: JobName = JobName.SEND_BOOKING_REMINDERS) -> Any:
    return await app.runner.run(job, trigger=Trigger.MANUAL)


async def _email_rows(engine: AsyncEngine) -> list[Any]:
    return await fetch(
        engine,
        "SELECT address, status, provider_message_id, last_error, batch_key FROM flavor_scheduler.deliveries "
        "WHERE channel = 'email' ORDER BY address",
    )


def _each_once(resend: FakeResend) -> None:
    addresses = [email.to[0] for email in resend.accepted]
    assert len(addresses) == len(set(addresses)), "an email was accepted twice"


async def test_due_emails_go_many_to_a_request(
    batched: App, engine: AsyncEngine, resend: FakeResend, clock: FrozenClock
) -> None:
    await _bookings(engine, 13)  # 26 emails: batches of 10, 10 and 6
    result = await _run(batched)
    assert result.success, result.errors
    requests = resend.requests_to("batch")
    assert sorted(len(request.json) for request in requests) == [6, 10, 10]
    assert resend.requests_to("send") == []
    keys = [request.headers["Idempotency-Key"] for request in requests]
    assert len(set(keys)) == 3 and all(key.startswith("batch-") for key in keys)
    _each_once(resend)
    rows = await _email_rows(engine)
    ids = {email.to[0]: email.id for email in resend.accepted}
    assert [(row.status, row.provider_message_id) for row in rows] == [("sent", ids[row.address]) for row in rows]
    assert result.messages[MessageState.SENT] == 26
    # The ceiling counts requests: at EMAIL_MAX_PER_SECOND=2 the three are granted half a second apart
    # (on the test's clock; bench/reminders.py measures the real rate).
    assert sum(clock.slept) >= 2 * 0.5


async def test_a_500_after_acceptance_is_replayed_under_the_same_key(
    batched: App, engine: AsyncEngine, resend: FakeResend
) -> None:
    await _bookings(engine, 3)  # 6 emails, one batch
    resend.script(Reply.accept_then_fail(500, SERVER_ERROR), route="batch")
    result = await _run(batched)
    assert result.success, result.errors
    first, replay = resend.requests_to("batch")
    assert first.headers["Idempotency-Key"] == replay.headers["Idempotency-Key"]
    assert first.json == replay.json
    assert len(resend.accepted) == 6  # accepted once; the replay answered the same ids
    _each_once(resend)
    ids = {email.to[0]: email.id for email in resend.accepted}
    assert all(row.provider_message_id == ids[row.address] for row in await _email_rows(engine))


async def test_a_batch_that_may_have_been_accepted_is_retried_whole_by_a_later_run(
    batched: App, engine: AsyncEngine, resend: FakeResend, clock: FrozenClock
) -> None:
    await _bookings(engine, 3)
    failing = Reply.accept_then_fail(500, SERVER_ERROR)
    resend.script(failing, failing, failing, route="batch")  # every try of this run
    first = await _run(batched)
    assert first.messages[MessageState.RETRYING] == 6
    rows = await _email_rows(engine)
    assert {row.status for row in rows} == {"pending"} and len({row.batch_key for row in rows}) == 1
    key = rows[0].batch_key
    assert [request.headers["Idempotency-Key"] for request in resend.requests_to("batch")] == [key] * 3

    await _bookings(engine, 1)  # a new booking's emails are due meanwhile: not mixed into the batch
    clock.advance(3600)  # an hour on, the text is written afresh ("in 4 hours", no longer "in 5 hours")
    later = await _run(batched, JobName.DELIVER_PENDING_MESSAGES)
    assert later.messages[MessageState.SENT] == 6, later.errors
    replay = resend.requests_to("batch")[3]
    assert replay.headers["Idempotency-Key"] == key
    assert {email["to"][0] for email in replay.json} == {
        email["to"][0] for email in resend.requests_to("batch")[0].json
    }
    assert all("in 4 hours" in email["text"] for email in replay.json)
    # Resend had the first try: it refuses the new text under the same key (409), so the six are
    # recorded as sent (their ids unknown) and nothing goes twice.
    assert len(resend.accepted) == 6
    assert {(row.status, row.provider_message_id) for row in await _email_rows(engine)} == {("sent", None)}
    await _run(batched)  # the new booking's two emails, a batch of their own
    assert len(resend.accepted) == 8
    _each_once(resend)
    assert {(row.status, row.batch_key) for row in await _email_rows(engine)} == {("sent", None)}


async def test_a_batch_resend_never_had_is_sent_with_its_fresh_text(
    batched: App, engine: AsyncEngine, resend: FakeResend, clock: FrozenClock
) -> None:
    await _bookings(engine, 3)
    lost = Reply.resend_error(503, "service_unavailable")  # answered 5xx without accepting it
    resend.script(lost, lost, lost, route="batch")
    await _run(batched)
    clock.advance(3600)
    later = await _run(batched, JobName.DELIVER_PENDING_MESSAGES)
    assert later.messages[MessageState.SENT] == 6, later.errors
    assert len(resend.accepted) == 6
    assert all("in 4 hours" in email.payload["text"] for email in resend.accepted)
    ids = {email.to[0]: email.id for email in resend.accepted}
    assert all(row.provider_message_id == ids[row.address] for row in await _email_rows(engine))


async def test_a_429_waits_for_retry_after(batched: App, engine: AsyncEngine, resend: FakeResend) -> None:
    await _bookings(engine, 2)
    resend.script(Reply.resend_error(429, "rate_limit_exceeded", headers={"Retry-After": "7"}), route="batch")
    result = await _run(batched)
    assert result.success, result.errors
    refused, accepted = resend.requests_to("batch")
    assert accepted.received_at - refused.received_at >= timedelta(seconds=7)
    assert len(resend.accepted) == 4


async def test_a_long_retry_after_is_left_to_a_later_run_as_a_fresh_batch(
    batched: App, engine: AsyncEngine, resend: FakeResend, clock: FrozenClock
) -> None:
    await _bookings(engine, 2)
    resend.script(Reply.resend_error(429, "rate_limit_exceeded", headers={"Retry-After": "90"}), route="batch")
    result = await _run(batched)
    assert result.messages[MessageState.RETRYING] == 4
    rows = await _email_rows(engine)
    assert {row.batch_key for row in rows} == {None}  # a 429 accepted nothing: no need to replay it as it was
    due = await fetch(
        engine, "SELECT min(next_attempt_at) AS at FROM flavor_scheduler.deliveries WHERE channel='email'"
    )
    assert due[0].at >= clock.now() + timedelta(seconds=89)


async def test_one_invalid_address_fails_alone(batched: App, engine: AsyncEngine, resend: FakeResend) -> None:
    bad = await add_client(engine, email="bounce-me@example.com")
    bookings = [await add_booking(engine, client=bad, event_date=NOW + timedelta(hours=5))]
    bookings += await _bookings(engine, 4)  # 10 emails in one batch, one of them refused
    resend.refuse.add("bounce-me@example.com")
    result = await _run(batched)
    assert result.messages[MessageState.SENT] == 9 and result.messages[MessageState.FAILED] == 1
    rows = {row.address: row for row in await _email_rows(engine)}
    assert rows["bounce-me@example.com"].status == "failed"
    assert "validation_error" in rows["bounce-me@example.com"].last_error
    assert all(row.status == "sent" for address, row in rows.items() if address != "bounce-me@example.com")
    assert sorted(email.to[0] for email in resend.accepted) == sorted(a for a in rows if a != "bounce-me@example.com")
    assert len(resend.requests_to("batch")) <= 1 + 2 * 4  # halves, down to the one: log2(10) rounds at most


async def test_batch_size_1_sends_one_by_one(
    database_url: str, resend: FakeResend, clock: FrozenClock, engine: AsyncEngine
) -> None:
    app = await _app(database_url, resend, clock, email_batch_size=1)
    try:
        performer = await add_performer(engine)
        for _ in range(2):
            await add_booking(engine, performer=performer, event_date=NOW + timedelta(hours=5))
        result = await _run(app)
        assert result.success, result.errors
        assert resend.requests_to("batch") == []
        sends = resend.requests_to("send")
        assert len(sends) == 4
        rows = await fetch(engine, "SELECT id FROM flavor_scheduler.deliveries WHERE channel = 'email'")
        assert sorted(request.headers["Idempotency-Key"] for request in sends) == sorted(str(row.id) for row in rows)
    finally:
        await app.aclose()


async def test_a_sender_killed_mid_request_leaves_the_batch_to_be_replayed(
    database_url: str, resend: FakeResend, clock: FrozenClock, engine: AsyncEngine
) -> None:
    """Resend accepted the batch, then the sender died before the answer: another replica, once the
    claim's lease has run out (by the database's clock), replays the same batch under the same key."""
    await _bookings(engine, 3)
    settings = Settings(
        _env_file=None, database_url=to_libpq(database_url), resend_api_key=RESEND_API_KEY,
        resend_api_url=resend.url, email_batch_size=10,
    )  # fmt: skip
    dying = build(settings, clock=clock, limits=Limits(delivery_lease_seconds=1.0))  # a second-long claim
    await dying.prepare_database()
    resend.script(Reply.accept_then_hang(), route="batch")
    run = asyncio.create_task(_run(dying))
    await wait_until(lambda: len(resend.accepted) == 6, within=10, what="Resend to accept the batch")
    run.cancel()  # killed: nothing after the request runs
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await dying.aclose()
    rows = await _email_rows(engine)
    assert {row.status for row in rows} == {"sending"} and len({row.batch_key for row in rows}) == 1
    assert rows[0].batch_key is not None  # written before the request went
    # Two more emails owed meanwhile, due when the replica comes: a fresh claim would batch all eight.
    await _bookings(engine, 1)
    failing = RecordingTransport(Channel.EMAIL)
    failing.fail_next(10)
    third = build(settings, clock=clock, transports={Channel.EMAIL: failing})
    await third.prepare_database()
    try:
        assert (await _run(third)).messages[MessageState.RETRYING] == 2
    finally:
        await third.aclose()
    clock.advance(3600)

    async def lease_expired() -> bool:
        found = await fetch(
            engine, "SELECT bool_and(lease_expires_at < now()) AS gone FROM flavor_scheduler.deliveries "
            "WHERE channel = 'email'",
        )  # fmt: skip
        return bool(found[0].gone)

    await wait_until(lease_expired, within=10, what="the dead sender's lease to run out")
    other = await _app(database_url, resend, clock, email_batch_size=10)
    try:
        result = await _run(other, JobName.DELIVER_PENDING_MESSAGES)
        assert result.messages[MessageState.SENT] == 8, result.errors
    finally:
        await other.aclose()
    first, *later = resend.requests_to("batch")
    # The replay and the fresh batch are claimed one after the other and sent side by side: either
    # may reach Resend first.
    (replay,) = [request for request in later if request.headers["Idempotency-Key"] == rows[0].batch_key]
    (fresh,) = [request for request in later if request is not replay]
    assert first.headers["Idempotency-Key"] == rows[0].batch_key
    assert [email["to"] for email in replay.json] == [email["to"] for email in first.json]  # the same six
    assert len(fresh.json) == 2
    assert len(resend.accepted) == 8  # nothing twice: Resend had the six, and refused their new text (409)
    _each_once(resend)
    assert {row.status for row in await _email_rows(engine)} == {"sent"}
