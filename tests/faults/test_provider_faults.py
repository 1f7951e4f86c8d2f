"""Provider faults: 30 % of calls answering 5xx, bursts of 429 with Retry-After, calls that hang
past the timeout (some after the provider accepted the message). Everything is delivered
exactly once, Retry-After is honoured, the send ceilings are never exceeded, each run's time
is bounded.

In this process, through the real Twilio and Resend SDKs against the stand-in servers, with a
2 s request timeout instead of 15 s (the transports' parameter; the same code path), and with
deferred retries brought forward instead of waiting out their backoff.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import build
from scheduler.limits import PRODUCTION
from scheduler.notify.resend import ResendTransport
from scheduler.notify.transport import Transport
from scheduler.notify.twilio import TwilioTransport
from scheduler.records import OutgoingMessage
from scheduler.vocabulary import Channel, JobName, Trigger
from tests.fakes.providers import FakeProviderServer, FakeResend, FakeTwilio, RecordedRequest, Reply, max_in_window
from tests.faults.support import (
    EXPOSURE,
    FULL,
    booking_parts,
    delivery_statuses,
    faults_settings,
    make_retries_due,
    owed_messages,
    product_logging,
    record,
    seed_bookings,
    stand_in_providers,
    stored_errors,
    tally,
)

BOOKINGS = 40  # 80 WhatsApp messages and 80 emails
RATES = {Channel.WHATSAPP: 20.0, Channel.EMAIL: 10.0}  # the ceilings under test
REQUEST_TIMEOUT_SECONDS = 2.0
SERVER_ERROR_SHARE = 0.30
BURSTS, BURST_LENGTH, RETRY_AFTER_SECONDS = 3, 6, 1
HANGS, HANGS_AFTER_ACCEPTING = 2, 2
MAX_RUNS = 8  # deliver_pending_messages runs allowed to finish the deferred ones
SLACK_SECONDS = 5.0
ARRIVAL_BUNCHING = 1.25  # arrivals in a second may exceed the ceiling by this factor, plus one


class Timed:
    """A transport that notes when each send leaves this process (after the rate limiter)."""

    def __init__(self, inner: TwilioTransport | ResendTransport) -> None:
        self.inner = inner
        self.channel = inner.channel
        self.provider = inner.provider
        self.sent_at: list[float] = []

    async def send(self, message: OutgoingMessage) -> str:
        self.sent_at.append(time.monotonic())
        return await self.inner.send(message)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        return await self.inner.find_sent(message, since)

    async def check(self) -> str:
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


def fault_script(server: FakeProviderServer, rng: random.Random, length: int, early: int) -> list[Reply]:
    """`length` replies: 30 % server errors, the rest normal; bursts of 429 and the hangs fall
    within the first `early` calls, which every run of the scenario makes."""
    retry_after = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(server, FakeTwilio):
        server_error = [Reply.twilio_error(500, 20500, "Internal Server Error"), Reply.twilio_error(503, 20503)]
        too_many = Reply.twilio_error(429, 20429, "Too Many Requests", retry_after)
    else:
        server_error = [Reply.resend_error(500, "internal_server_error"), Reply.resend_error(503, "unavailable")]
        too_many = Reply.resend_error(429, "rate_limit_exceeded", "slow down", retry_after)
    script = [Reply(accept=True)] * length
    for position in range(length):
        if rng.random() < SERVER_ERROR_SHARE:
            script[position] = rng.choice(server_error)
    starts = rng.sample(range(0, early - BURST_LENGTH, BURST_LENGTH), BURSTS)
    for start in starts:
        script[start : start + BURST_LENGTH] = [too_many] * BURST_LENGTH
    bursts = {start + i for start in starts for i in range(BURST_LENGTH)}
    hangs = rng.sample([position for position in range(early) if position not in bursts], HANGS + HANGS_AFTER_ACCEPTING)
    for position in hangs[:HANGS]:
        script[position] = Reply.never()
    for position in hangs[HANGS:]:
        script[position] = Reply.accept_then_hang()  # the message exists; the answer never comes
    return script


def message_key(request: RecordedRequest) -> str:
    """The message a request carried: Resend's idempotency key, or Twilio's recipient and text."""
    if request.form is not None:
        return f"{request.form.get('To')}|{request.form.get('Body')}"
    return str(request.headers.get("Idempotency-Key"))


def retry_after_ignored(server: FakeProviderServer) -> int:
    """Retries of a message sooner than the Retry-After its 429 asked for."""
    by_message: dict[str, list[RecordedRequest]] = defaultdict(list)
    for request in server.requests_to("send"):
        by_message[message_key(request)].append(request)
    early = 0
    for attempts in by_message.values():
        for previous, following in itertools.pairwise(attempts):
            if previous.answer == "429" and following.at - previous.at < RETRY_AFTER_SECONDS - 0.05:
                early += 1
    return early


def answers(server: FakeProviderServer) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for request in server.requests_to("send"):
        counts[request.answer or "unanswered"] += 1
    return dict(counts)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_flaky_providers_deliver_everything_once_within_the_ceilings(
    database_url: str, engine: AsyncEngine
) -> None:
    seed = random.randrange(2**32)  # noqa: S311 - choosing faults
    rng = random.Random(seed)  # noqa: S311
    seeded = await seed_bookings(engine, BOOKINGS, now=datetime.now(UTC))
    async with stand_in_providers() as (twilio, resend):
        servers: dict[Channel, FakeTwilio | FakeResend] = {Channel.WHATSAPP: twilio, Channel.EMAIL: resend}
        for server in servers.values():
            server.script(*fault_script(server, rng, length=4 * 2 * BOOKINGS, early=2 * BOOKINGS))
        settings = faults_settings(
            database_url,
            twilio,
            resend,
            whatsapp_max_per_second=RATES[Channel.WHATSAPP],
            email_max_per_second=RATES[Channel.EMAIL],
        )
        timed = {
            Channel.WHATSAPP: Timed(TwilioTransport(settings, request_timeout_seconds=REQUEST_TIMEOUT_SECONDS)),
            Channel.EMAIL: Timed(ResendTransport(settings, request_timeout_seconds=REQUEST_TIMEOUT_SECONDS)),
        }
        transports: dict[Channel, Transport] = dict(timed)
        app = build(settings, transports=transports)
        await app.prepare_database()
        runs: list[dict[str, Any]] = []
        try:
            with product_logging(settings) as logs:
                job = JobName.SEND_BOOKING_REMINDERS
                for _ in range(MAX_RUNS):
                    before = {channel: len(server.requests_to("send")) for channel, server in servers.items()}
                    started = time.monotonic()
                    result = await app.runner.run(job, trigger=Trigger.MANUAL)
                    seconds = time.monotonic() - started
                    calls = {ch: len(servers[ch].requests_to("send")) - before[ch] for ch in servers}
                    runs.append({"job": job.value, "seconds": seconds, "calls": calls, "errors": result.errors})
                    pending = (await delivery_statuses(engine)).keys() - {"sent"}
                    if not pending:
                        break
                    await make_retries_due(engine)
                    job = JobName.DELIVER_PENDING_MESSAGES
            EXPOSURE.check("provider faults: logs", logs.getvalue())
        finally:
            await app.aclose()

        assert await delivery_statuses(engine) == {"sent": 4 * BOOKINGS}, runs
        assert set((await booking_parts(engine, seeded, "booking_reminder")).values()) == {FULL}
        counts = tally(twilio, resend)
        assert counts.missing(owed_messages(seeded)) == []
        assert counts.duplicates("whatsapp") == 0
        assert counts.duplicates("email") == 0
        # The ceiling holds for the calls this process makes ...
        peaks = {channel: max_in_window(timed[channel].sent_at) for channel in servers}
        for channel, peak in peaks.items():
            assert peak <= RATES[channel], f"{channel}: {peak} calls in one second, ceiling {RATES[channel]:g}"
        # ... while arrivals, as the provider counts them, may bunch: a call held up on its way
        # (here: by this busy event loop, which also runs the stand-ins) lands in the next call's
        # second. Measured: one extra. Checked only against gross excess (a broken limiter).
        arrivals = {channel: max_in_window(server.times("send")) for channel, server in servers.items()}
        for channel, peak in arrivals.items():
            assert peak <= RATES[channel] * ARRIVAL_BUNCHING + 1, f"{channel}: {peak} arrivals in one second"
        early = {channel: retry_after_ignored(server) for channel, server in servers.items()}
        assert early == {Channel.WHATSAPP: 0, Channel.EMAIL: 0}, f"retries before Retry-After: {early}"
        for run in runs:
            # The run's time: its calls at the ceiling, plus one message's worst case in a run
            # (every try timing out, the longest waits between tries), plus slack.
            bound = max(run["calls"][ch] / RATES[ch] for ch in servers)
            longest_waits = sum(max(2.0**i, RETRY_AFTER_SECONDS) for i in range(PRODUCTION.in_run_attempts - 1))
            bound += PRODUCTION.in_run_attempts * REQUEST_TIMEOUT_SECONDS + longest_waits
            bound += SLACK_SECONDS
            assert run["seconds"] <= bound, f"{run['job']} took {run['seconds']:.1f} s, bound {bound:.1f} s"
        EXPOSURE.check("provider faults: run errors", "\n".join(e for run in runs for e in run["errors"]))
        EXPOSURE.check("provider faults: stored errors", await stored_errors(engine))

    record(
        "3 provider faults",
        seed=seed,
        messages=4 * BOOKINGS,
        runs=len(runs),
        whatsapp_answers=answers(twilio),
        email_answers=answers(resend),
        whatsapp_peak_calls_per_second=peaks[Channel.WHATSAPP],
        email_peak_calls_per_second=peaks[Channel.EMAIL],
        whatsapp_peak_arrivals_per_second=arrivals[Channel.WHATSAPP],
        email_peak_arrivals_per_second=arrivals[Channel.EMAIL],
        run_seconds=[round(run["seconds"], 1) for run in runs],
        duplicates=0,
    )
