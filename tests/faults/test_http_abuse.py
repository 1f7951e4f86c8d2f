"""HTTP abuse against a running daemon (in this process, CRON_SECRET set): missing, wrong,
prefixed, undecodable and very long tokens; other methods; unknown paths; large bodies; forged
and malformed Twilio callbacks; a burst of concurrent triggers. The answers are 401, 403, 404,
405, 409 and 413 as CONTRACT §6 says, never a 500; a rejected request runs nothing; at most one
run of a group at a time; and afterwards the daemon answers /healthz, /readyz and /metrics and
still runs a genuine trigger. Every log line it wrote is scanned for the distinctive secrets.

The daemon's transports are recording stand-ins (no provider is involved); the burst holds its
runs in their first send (`pause()`), so the other callers meet a run in progress, not a race
with a run that already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

import scheduler.http as http_module
from scheduler.app import App, build
from scheduler.db.tables import deliveries
from scheduler.http import HttpServer
from scheduler.jobs.catalog import GROUPS
from scheduler.limits import ConnectionLimits, Limits
from scheduler.settings import Settings
from scheduler.vocabulary import JobName
from tests.factories import add_booking, fetch, scalar
from tests.faults.support import (
    CRON_SECRET,
    EXPOSURE,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_WHATSAPP_NUMBER,
    faults_settings,
    product_logging,
    record,
    wait_until,
)
from tests.integration.test_daemon import Running, callback_form, scrape, started, value

QUIET = "0 0 1 1 *"  # once a year: nothing fires unless a request makes it
CALLBACK_URL = "https://scheduler.example.com/api/twilio/status"
EVIL_URL = "https://evil.example.com/api/twilio/status"
WRONG_TOKEN = "wrong-f4a17-token-e2c7"  # distinctive too: a refused token must not be logged either
HEADER_LIMIT = 8190  # aiohttp's longest header line; longer ones are refused by its parser
TEN_MB = 10 * 1024 * 1024
ONE_MB = 1024 * 1024
BURST = 50  # concurrent trigger calls per group
PROBE_FLOOD = 100  # concurrent calls of each probe while the burst's runs are held
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
RAW_TIMEOUT_SECONDS = 10.0
SCENARIO = "7 http abuse"
ANSWERED: Counter[int] = Counter()  # every status the daemons answered, over the module's tests


# --- the daemon under abuse -------------------------------------------------------------------------


@dataclass
class Target:
    """A daemon started in this process, an HTTP client for it, and every status it answered."""

    running: Running
    http: aiohttp.ClientSession
    answers: Counter[int] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def port(self) -> int:
        port = self.running.app.http.port
        assert port is not None
        return port

    async def status(self, method: str, path: str, **kwargs: Any) -> int:
        async with self.http.request(method, f"{self.url}{path}", **kwargs) as response:
            await response.read()
            self.answers[response.status] += 1
            return response.status

    async def raw(self, request: bytes) -> int:
        """Send bytes no well-behaved client would; returns the status of the answer."""
        answer = await raw_exchange(self.port, request)
        assert answer.startswith(b"HTTP/1."), f"no HTTP answer: {answer[:200]!r}"
        status = int(answer.split(b" ", 2)[1])
        self.answers[status] += 1
        return status


def abuse_settings(database_url: str, **overrides: Any) -> Settings:
    """The distinctive secrets, nothing scheduled, status callbacks on."""
    values: dict[str, Any] = {f"schedule_{job.value}": QUIET for job in JobName}
    values |= {
        "http_host": "127.0.0.1",
        "timezone": "UTC",
        "twilio_account_sid": TWILIO_ACCOUNT_SID,
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "twilio_whatsapp_number": TWILIO_WHATSAPP_NUMBER,
        "twilio_status_callback_url": CALLBACK_URL,
        **overrides,
    }
    return faults_settings(database_url, **values)


@contextlib.asynccontextmanager
async def daemon_under_abuse(database_url: str) -> AsyncIterator[Target]:
    """The daemon, its logs captured as it writes them; at the end: a clean stop and no leak."""
    settings = abuse_settings(database_url)
    connector = aiohttp.TCPConnector(limit=0)  # a burst is a burst: no client-side queue
    with product_logging(settings) as library_logs:
        async with (
            started(settings) as running,
            aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as http,
        ):
            target = Target(running, http)
            yield target
    assert running.exit_code == 0
    ANSWERED.update(target.answers)
    record(SCENARIO, answers_by_status={status: ANSWERED[status] for status in sorted(ANSWERED)})
    assert target.answers[500] == 0, "a request was answered 500"
    events = json.dumps(running.logs, default=str)
    for source, output in (("structlog events", events), ("library log records", library_logs.getvalue())):
        EXPOSURE.check(f"http abuse: {source}", output)
        assert WRONG_TOKEN not in output, f"a refused token was written to the {source}"
    # aiohttp logs a handler's exception from _handle_request (answered 500); parser refusals elsewhere.
    crashes = [line[:300] for line in library_logs.getvalue().splitlines() if "_handle_request" in line]
    assert crashes == [], "a request crashed a handler"


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Write `request` (in chunks, while reading) and return whatever the server answered.

    The server may answer and close before the request is fully written (a refused header or
    body): reading alongside keeps the answer even when the rest of the write is reset.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(request), 65536):
                writer.write(request[start : start + 65536])
                await writer.drain()

    sending = asyncio.create_task(write())
    answer = b""
    try:
        async with asyncio.timeout(RAW_TIMEOUT_SECONDS):
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    answer += chunk
                    if b"\r\n\r\n" in answer and _complete(answer):
                        break
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, length = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(length)
    return False


def get_request(path: str, *headers: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def run_history(engine: AsyncEngine) -> list[Any]:
    return await fetch(engine, "SELECT job_name, trigger, status FROM flavor_scheduler.job_runs ORDER BY started_at")


async def assert_unaffected(target: Target) -> None:
    """Alive, ready, scrapeable, and a genuine trigger still runs (nothing left stuck)."""
    assert not target.running.task.done(), "the daemon stopped"
    assert await target.status("GET", "/healthz") == 200
    assert await target.status("GET", "/readyz") == 200
    families = await scrape(target.http, target.running)
    assert "flavor_scheduler_job_runs" in families
    assert await target.status("POST", "/api/cron/cleanup", headers=bearer(CRON_SECRET)) == 200


# --- tokens -----------------------------------------------------------------------------------------

# Authorization headers that must not run anything. "x" stands for a wrong token; the second
# half carries the real secret in a shape that is not `Bearer <secret>`.
REFUSED_HEADERS: dict[str, dict[str, str]] = {
    "missing": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "wrong": bearer(WRONG_TOKEN),
    "double space, wrong": {"Authorization": f"Bearer  {WRONG_TOKEN}"},
    "lower-case scheme, wrong": {"Authorization": f"bearer {WRONG_TOKEN}"},
    "Token scheme, wrong": {"Authorization": f"Token {WRONG_TOKEN}"},
    "no space, wrong": {"Authorization": f"Bearer{WRONG_TOKEN}"},
    "secret without scheme": {"Authorization": CRON_SECRET},
    "secret, Token scheme": {"Authorization": f"Token {CRON_SECRET}"},
    "secret, Basic scheme": {"Authorization": f"Basic {CRON_SECRET}"},
    "secret, no space": {"Authorization": f"Bearer{CRON_SECRET}"},
    "secret, tab": {"Authorization": f"Bearer\t{CRON_SECRET}"},
    "secret twice": bearer(f"{CRON_SECRET} {CRON_SECRET}"),
    "secret with suffix": bearer(f"{CRON_SECRET}x"),
    "secret with prefix": bearer(f"x{CRON_SECRET}"),
    "secret shortened": bearer(CRON_SECRET[:-1]),
    "secret upper-cased": bearer(CRON_SECRET.upper()),
    "secret in another header": {"X-Cron-Secret": CRON_SECRET},
    "secret in the query": {},  # see the path below
    "8 KB token": bearer(CRON_SECRET + "a" * (HEADER_LIMIT - 200)),
}


async def test_missing_wrong_prefixed_and_long_tokens_answer_401_and_run_nothing(
    database_url: str, engine: AsyncEngine
) -> None:
    started_at = time.monotonic()
    refused = Counter[str]()
    async with daemon_under_abuse(database_url) as target:
        for name, headers in REFUSED_HEADERS.items():
            query = f"?secret={CRON_SECRET}&token={CRON_SECRET}" if name == "secret in the query" else ""
            for method in ("GET", "POST"):
                for group in ("cleanup", "reminders"):
                    async with target.http.request(
                        method, f"{target.url}/api/cron/{group}{query}", headers=headers
                    ) as response:
                        target.answers[response.status] += 1
                        assert (response.status, name) == (401, name)
                        assert response.headers["WWW-Authenticate"] == "Bearer"
                        assert await response.json() == {"success": False, "error": "unauthorized"}
                        refused[name] += 1

        # Bytes that are not UTF-8: refused like any wrong token (before the fix: a 500 and a traceback).
        for token in (b"\xff\xfe", CRON_SECRET.encode() + b"\xff", b"\xc3\x28" + CRON_SECRET.encode()):
            assert await target.raw(get_request("/api/cron/cleanup", b"Authorization: Bearer " + token)) == 401
            refused["undecodable"] += 1
        # 1 MB: aiohttp's parser refuses the header line before any handler sees it.
        megabyte = b"Authorization: Bearer " + CRON_SECRET.encode() + b"a" * ONE_MB
        for path in ("/api/cron/cleanup", "/api/cron/reminders"):
            assert await target.raw(get_request(path, megabyte)) in (400, 431)
            refused["1 MB token"] += 1
        assert await run_history(engine) == []
        families = await scrape(target.http, target.running)
        for job in JobName:
            for outcome in ("success", "error"):
                runs = value(
                    families,
                    "flavor_scheduler_job_runs",
                    "flavor_scheduler_job_runs_total",
                    job_name=job,
                    outcome=outcome,
                )
                assert runs == 0, (job, outcome)
        unauthorised = len(target.running.events("cron_trigger_unauthorised"))
        await assert_unaffected(target)
    assert unauthorised == sum(refused.values()) - refused["1 MB token"]
    record(
        SCENARIO,
        token_variants=len(REFUSED_HEADERS) + 3 + 1,
        token_requests=sum(refused.values()),
        token_401=sum(refused.values()) - refused["1 MB token"],
        one_mb_token_status="400 (header line over 8190 bytes, refused by the HTTP parser)",
        token_runs_started=0,
        token_seconds=round(time.monotonic() - started_at, 2),
    )


async def test_the_token_is_compared_in_constant_time(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every presented token, whatever its length, goes through hmac.compare_digest against the secret."""
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((bytes(a), bytes(b)))
        return original(a, b)

    monkeypatch.setattr(http_module.hmac, "compare_digest", spy)
    presented = [WRONG_TOKEN, CRON_SECRET[:-1] + "0", "a", CRON_SECRET * 3]
    async with daemon_under_abuse(database_url) as target:
        for token in presented:
            assert await target.status("GET", "/api/cron/cleanup", headers=bearer(token)) == 401
        assert await target.status("GET", "/api/cron/cleanup", headers=bearer(CRON_SECRET)) == 200
    secret = CRON_SECRET.encode()
    assert compared == [(token.encode(), secret) for token in [*presented, CRON_SECRET]]
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.job_runs") == len(GROUPS["cleanup"])
    record(SCENARIO, constant_time_compare="hmac.compare_digest on every presented token")


# --- methods, paths, bodies ---------------------------------------------------------------------------

ROUTES = {
    "/api/cron/cleanup": ("GET", "POST"),
    "/api/cron/reminders": ("GET", "POST"),
    "/api/twilio/status": ("POST",),
    "/metrics": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
}
OTHER_METHODS = ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "GET", "POST", "HEAD")
UNKNOWN_PATHS = (
    "/", "/api", "/api/cron", "/api/cron/", "/api/cron/all", "/api/cron/deliver_pending_messages",
    "/api/cron/cleanup_stale_bookings", "/api/cron/send_booking_reminders", "/api/cron/cleanup/",
    "/api/cron/cleanup/now", "/API/CRON/CLEANUP", "/api/cron/Cleanup", "/api/cron/cleanup.json",
    "/metrics/", "/healthz/x", "/api/twilio", "/api/twilio/status/x", "/.env", "/admin",
    "/api/cron/cleanup%00", "/api/cron/cleanup%2F", "/api/cron/clean up",
)  # fmt: skip


async def test_other_methods_answer_405_and_unknown_paths_404_even_with_the_token(
    database_url: str, engine: AsyncEngine
) -> None:
    started_at = time.monotonic()
    async with daemon_under_abuse(database_url) as target:
        not_allowed = 0
        for path, allowed in ROUTES.items():
            for method in OTHER_METHODS:
                if method in allowed:
                    continue
                status = await target.status(method, path, headers=bearer(CRON_SECRET))
                assert (method, path, status) == (method, path, 405)
                not_allowed += 1
        not_found = 0
        for path in UNKNOWN_PATHS:
            for method in ("GET", "POST", "PUT"):
                async with target.http.request(
                    method, target.url + path, headers=bearer(CRON_SECRET), allow_redirects=False
                ) as response:
                    target.answers[response.status] += 1
                    assert (method, path, response.status) == (method, path, 404)
                    not_found += 1
        assert await run_history(engine) == []
        await assert_unaffected(target)
    record(
        SCENARIO,
        method_requests_405=not_allowed,
        unknown_path_requests_404=not_found,
        method_path_seconds=round(time.monotonic() - started_at, 2),
    )


async def _chunks(total: int, size: int = ONE_MB) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


async def test_large_bodies_answer_413_and_run_nothing(database_url: str, engine: AsyncEngine) -> None:
    """10 MB with a Content-Length is refused before any handler, with or without the token; a
    chunked body (no length) is refused as soon as reading it passes 64 KiB, or not read at all."""
    started_at = time.monotonic()
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(CALLBACK_URL, {})
    async with daemon_under_abuse(database_url) as target:
        for path, headers in (
            ("/api/cron/cleanup", {}),
            ("/api/cron/cleanup", bearer(CRON_SECRET)),
            ("/api/cron/reminders", bearer(CRON_SECRET)),
            ("/api/twilio/status", {"X-Twilio-Signature": signature}),
        ):
            status = await target.status("POST", path, data=io.BytesIO(b"x" * TEN_MB), headers=headers)
            assert (path, status) == (path, 413)
        # Chunked: the callback reads its form, capped at 64 KiB; a refused trigger never reads.
        form_headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
        status = await target.status("POST", "/api/twilio/status", data=_chunks(TEN_MB), headers=form_headers)
        assert status == 413
        status = await target.status("POST", "/api/cron/cleanup", data=_chunks(TEN_MB), headers=bearer(WRONG_TOKEN))
        assert status == 401
        assert await run_history(engine) == []
        await assert_unaffected(target)
    record(SCENARIO, ten_mb_bodies_413=5, body_seconds=round(time.monotonic() - started_at, 2))


# --- Twilio status callbacks ---------------------------------------------------------------------------


async def _sent_delivery(engine: AsyncEngine, provider_id: str) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            deliveries.insert().values(
                id=uuid4(), dedupe_key=f"abuse:{provider_id}", booking_id=uuid4(), booking_reference="FX-000001",
                kind="booking_reminder", recipient_role="client", channel="whatsapp", address="+61400000001",
                body_text="reminder", status="sent", attempts=1, provider_message_id=provider_id,
                created_at=now, updated_at=now, sent_at=now,
            )
        )  # fmt: skip


def _form_request(body: bytes, content_type: bytes, signature: str) -> bytes:
    head = [
        b"POST /api/twilio/status HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: " + content_type,
        b"X-Twilio-Signature: " + signature.encode(),
        b"Content-Length: " + str(len(body)).encode(),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_forged_or_malformed_twilio_callbacks_answer_403_and_change_nothing(
    database_url: str, engine: AsyncEngine
) -> None:
    sid = "SM" + "7" * 32
    await _sent_delivery(engine, sid)
    genuine = callback_form(sid, "failed", "63016")
    validator = RequestValidator(TWILIO_AUTH_TOKEN)
    forger = RequestValidator("not-the-token")
    good = validator.compute_signature(CALLBACK_URL, genuine)
    forgeries: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("unsigned", genuine, {}),
        ("empty signature", genuine, {"X-Twilio-Signature": ""}),
        ("garbage signature", genuine, {"X-Twilio-Signature": "Zm9yZ2VkLXNpZ25hdHVyZQ=="}),
        ("another token", genuine, {"X-Twilio-Signature": forger.compute_signature(CALLBACK_URL, genuine)}),
        ("another URL", genuine, {"X-Twilio-Signature": validator.compute_signature(EVIL_URL, genuine)}),
        ("tampered status", {**genuine, "MessageStatus": "delivered"}, {"X-Twilio-Signature": good}),
        ("extra field", {**genuine, "ErrorCode": "0"}, {"X-Twilio-Signature": good}),
        ("signature of nothing", genuine, {"X-Twilio-Signature": validator.compute_signature(CALLBACK_URL, {})}),
        ("upper-cased signature", genuine, {"X-Twilio-Signature": good.upper()}),
    ]  # fmt: skip
    # Bodies a form parser chokes on: each was a 500 with a traceback before the fix.
    malformed: list[tuple[str, bytes, bytes]] = [
        ("undecodable bytes", b"MessageSid=\xff\xfe&MessageStatus=failed", b"application/x-www-form-urlencoded"),
        ("unknown charset", b"MessageSid=x", b"application/x-www-form-urlencoded; charset=bogus"),
        ("multipart without boundary", b"MessageSid=x", b"multipart/form-data"),
        ("multipart garbage", b"garbage", b"multipart/form-data; boundary=zz"),
        (
            "multipart file",
            b'--b\r\nContent-Disposition: form-data; name="MessageSid"; filename="f"\r\n\r\nx\r\n--b--\r\n',
            b"multipart/form-data; boundary=b",
        ),
        ("JSON", json.dumps(genuine).encode(), b"application/json"),
    ]
    started_at = time.monotonic()
    async with daemon_under_abuse(database_url) as target:
        endpoint = "/api/twilio/status"
        for name, form, headers in forgeries:
            assert (name, await target.status("POST", endpoint, data=form, headers=headers)) == (name, 403)
        for name, body, content_type in malformed:
            assert (name, await target.raw(_form_request(body, content_type, good))) == (name, 403)
        # A flood of forgeries at once.
        flood = await asyncio.gather(
            *(target.status("POST", endpoint, data={**genuine, "n": str(n)}, headers={"X-Twilio-Signature": good})
              for n in range(200))
        )  # fmt: skip
        assert set(flood) == {403}
        assert await scalar(engine, "SELECT provider_status FROM flavor_scheduler.deliveries") is None
        families = await scrape(target.http, target.running)
        statuses = "flavor_scheduler_message_status_total"
        assert value(families, "flavor_scheduler_message_status", statuses, channel="whatsapp", status="failed") == 0
        # The genuine callback still gets through.
        assert await target.status("POST", endpoint, data=genuine, headers={"X-Twilio-Signature": good}) == 204
        rejected = len(target.running.events("twilio_callback_rejected"))
        await assert_unaffected(target)
    row = (await fetch(engine, "SELECT provider_status, provider_error_code FROM flavor_scheduler.deliveries"))[0]
    assert tuple(row) == ("failed", "63016")
    assert rejected == len(forgeries) + len(malformed) + len(flood)
    record(
        SCENARIO,
        forged_callbacks_403=len(forgeries) + len(flood),
        malformed_callbacks_403=len(malformed),
        callback_seconds=round(time.monotonic() - started_at, 2),
    )


# --- a burst of triggers ---------------------------------------------------------------------------------


async def test_concurrent_triggers_run_once_and_the_rest_answer_409(database_url: str, engine: AsyncEngine) -> None:
    """50 POST /api/cron/cleanup and 50 POST /api/cron/reminders at once (with 20 unauthorised
    calls among them): one run per group, held in its first send; the other 49 of each get 409
    while it runs. Then the runs finish (200), and a later call runs again."""
    now = datetime.now(UTC)
    await add_booking(engine, status="pending", payment_status="pending", created_at=now - timedelta(hours=48))
    await add_booking(engine, event_date=now + timedelta(hours=10))
    started_at = time.monotonic()
    async with daemon_under_abuse(database_url) as target:
        running = target.running
        running.whatsapp.pause()
        running.email.pause()

        async def call(group: str, token: str) -> tuple[str, int, dict[str, Any]]:
            async with target.http.post(f"{target.url}/api/cron/{group}", headers=bearer(token)) as response:
                target.answers[response.status] += 1
                return group, response.status, await response.json()

        plan = [("cleanup", CRON_SECRET)] * BURST + [("reminders", CRON_SECRET)] * BURST
        plan += [("cleanup", WRONG_TOKEN), ("reminders", WRONG_TOKEN)] * 10
        calls = [asyncio.create_task(call(group, token)) for group, token in plan[::2] + plan[1::2]]
        await wait_until(
            lambda: sum(task.done() for task in calls) == len(calls) - 2, within=20, what="all but the two runs"
        )
        early = Counter((task.result()[0], task.result()[1]) for task in calls if task.done())
        assert early == {("cleanup", 409): BURST - 1, ("reminders", 409): BURST - 1, ("cleanup", 401): 10,
                         ("reminders", 401): 10}  # fmt: skip
        for task in calls:
            if task.done() and task.result()[1] == 409:
                assert task.result()[2]["success"] is False
                assert "already running" in task.result()[2]["error"]

        # Both runs reach their first send and wait there.
        def held() -> bool:
            kinds = {message.kind.value for message in [*running.whatsapp.attempts, *running.email.attempts]}
            return kinds >= {"booking_cancelled", "booking_reminder"}

        await wait_until(held, within=20, what="both runs to wait in a send")
        # While held: one running row and a job_running gauge of 1 for each held job, 0 elsewhere.
        running_now = await fetch(
            engine, "SELECT job_name, trigger FROM flavor_scheduler.job_runs WHERE status = 'running' ORDER BY 1"
        )
        assert [tuple(row) for row in running_now] == [
            ("cleanup_stale_bookings", "http"),
            ("send_booking_reminders", "http"),
        ]
        families = await scrape(target.http, running)
        gauges = {
            job.value: value(families, "flavor_scheduler_job_running", "flavor_scheduler_job_running", job_name=job)
            for job in JobName
        }
        assert gauges == {job.value: int(job in (JobName.CLEANUP_STALE_BOOKINGS, JobName.SEND_BOOKING_REMINDERS))
                          for job in JobName}  # fmt: skip
        # Probes keep answering meanwhile, a flood of them included.
        probes = await asyncio.gather(
            *(target.status("GET", path) for path in ("/healthz", "/readyz", "/metrics") * PROBE_FLOOD)
        )
        assert set(probes) == {200}

        held_calls = [task for task in calls if not task.done()]  # chosen before either run can finish
        running.whatsapp.resume()
        running.email.resume()
        async with asyncio.timeout(20):
            finished = [await task for task in held_calls]
        by_group = {group: (status, body) for group, status, body in finished}
        assert by_group["cleanup"][0] == 200, by_group
        assert by_group["cleanup"][1]["summary"]["staleBookings"] == {"cancelled": 1, "errors": []}
        assert by_group["reminders"][0] == 200, by_group
        assert by_group["reminders"][1]["summary"]["bookingReminders"] == {"sent": 1, "errors": []}
        assert by_group["reminders"][1]["summary"]["paymentReminders"] == {"sent": 1, "errors": []}
        history = await run_history(engine)
        burst_seconds = time.monotonic() - started_at
        families = await scrape(target.http, running)
        await assert_unaffected(target)  # and one more cleanup, which runs
    expected_jobs = [*GROUPS["cleanup"], *GROUPS["reminders"]]
    assert Counter(row.job_name for row in history) == Counter(job.value for job in expected_jobs)
    assert {(row.trigger, row.status) for row in history} == {("http", "success")}
    for job in expected_jobs:
        runs_total = value(
            families, "flavor_scheduler_job_runs", "flavor_scheduler_job_runs_total", job_name=job, outcome="success"
        )
        assert runs_total == 1, job
    sent = await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE status = 'sent'")
    assert sent == 10  # 4 cancellation notices; 4 event reminders and the client's 2 balance reminders
    record(
        SCENARIO,
        concurrent_trigger_calls=len(plan),
        concurrent_runs_per_group=1,
        concurrent_409=2 * (BURST - 1),
        concurrent_401=20,
        probe_flood_200=3 * PROBE_FLOOD,
        concurrent_seconds=round(burst_seconds, 2),
    )


# --- idle and trickling connections (slow-loris) -------------------------------------------------------
# A server of our own with shortened limits (the production ones are 256 connections and 10 s):
# the same HttpServer the daemon runs, on a database that answers, nothing scheduled.

GUARD_LIMITS = ConnectionLimits(max_connections=64, request_timeout_seconds=1.5, evict_idle_after_seconds=0.2)
ATTACKERS_IDLE = 200  # connect and say nothing
ATTACKERS_TRICKLING = 150  # headers one byte at a time, never finished
TRICKLE_INTERVAL_SECONDS = 0.1  # the attack's own pace, faster than any timeout, so bytes keep arriving
PROMPT_SECONDS = 2.0  # a probe under attack answers within this (milliseconds when idle; headroom for a loaded CI)
HEADERS_NEVER_ENDING = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@dataclass
class Guarded:
    server: HttpServer
    app: App
    logs: io.StringIO

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def lines(self) -> list[str]:
        return self.logs.getvalue().splitlines()


@contextlib.asynccontextmanager
async def guarded_server(database_url: str, limits: ConnectionLimits, *, ready: bool = True) -> AsyncIterator[Guarded]:
    settings = abuse_settings(database_url)
    with product_logging(settings) as logs:
        app = build(settings, transports={}, limits=Limits(http=limits))
        try:
            if ready:
                await app.prepare_database()
                app.schedule.start(lambda _job, _at: None)  # alive, as the daemon's is; no fire runs
                app.lifecycle.become_ready()
            server = app.http
            await server.start()
            try:
                yield Guarded(server, app, logs)
            finally:
                await server.stop()
                app.schedule.shutdown()
        finally:
            await app.aclose()


@contextlib.asynccontextmanager
async def attackers(port: int, idle: int, trickling: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """Open the connections (loopback only); the trickling ones send a byte every interval until closed."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    tricklers: list[asyncio.Task[None]] = []

    async def trickle(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for n in itertools.count():
                writer.write(HEADERS_NEVER_ENDING if n == 0 else b"x")
                await writer.drain()
                await asyncio.sleep(TRICKLE_INTERVAL_SECONDS)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        # Past the limit and the kernel's backlog a connect waits for room: give up on those.
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                return await asyncio.open_connection("127.0.0.1", port)
        return None

    opened = await asyncio.gather(*(connect() for _ in range(idle + trickling)))
    for n, pair in enumerate(opened):
        if pair is None:
            continue
        reader, writer = pair
        readers.append(reader)
        writers.append(writer)
        if n >= idle:
            tricklers.append(asyncio.create_task(trickle(writer)))
    try:
        yield readers
    finally:
        for task in tricklers:
            task.cancel()
        await asyncio.gather(*tricklers, return_exceptions=True)
        for writer in writers:
            writer.close()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closed the connection (EOF or reset), reading whatever it sent."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
    return time.monotonic() - started


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with http.get(url) as response:
        await response.read()
        return response.status, time.monotonic() - started


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_hundreds_of_idle_and_trickling_connections_never_stop_the_probes(database_url: str) -> None:
    """350 connections that never finish a request against a limit of 64: the server never holds
    more than 64, /healthz and /metrics still answer promptly, and the log gets a line, not a flood."""
    fresh = aiohttp.TCPConnector(force_close=True)  # every probe on a new connection, as a kubelet's
    async with (
        guarded_server(database_url, GUARD_LIMITS) as guarded,
        aiohttp.ClientSession(connector=fresh, timeout=REQUEST_TIMEOUT) as http,
    ):
        descriptors_before = open_descriptors()
        lines_before = len(guarded.lines())
        most_open = 0
        async with attackers(guarded.server.port or 0, ATTACKERS_IDLE, ATTACKERS_TRICKLING) as connected:
            timings: list[float] = []
            for path in ("/healthz", "/metrics", "/readyz") * 5:
                status, seconds = await timed_get(http, guarded.url + path)
                assert (path, status) == (path, 200)
                timings.append(seconds)
                most_open = max(most_open, guarded.server.guard.open_connections)
            # Our descriptors: the server's (at most the limit) plus the attackers' own client ends.
            descriptors_during = open_descriptors() - descriptors_before - len(connected)
        assert len(connected) >= ATTACKERS_IDLE  # most got through the kernel's backlog
        assert max(timings) < PROMPT_SECONDS, timings
        assert most_open <= GUARD_LIMITS.max_connections
        assert descriptors_during <= GUARD_LIMITS.max_connections + 10
        shed, timed_out = guarded.server.guard.shed, guarded.server.guard.timed_out
        assert shed > 0
        new_lines = guarded.lines()[lines_before:]
        limited = [line for line in new_lines if "http_connections_limited" in line]
        assert len(limited) == 1, limited  # the first shed at once; the next summary a minute later
        assert len(new_lines) <= 5, new_lines[:10]
    record(
        SCENARIO,
        slowloris_connections=len(connected),
        slowloris_limit=GUARD_LIMITS.max_connections,
        slowloris_most_open=most_open,
        slowloris_shed=shed,
        slowloris_timed_out=timed_out,
        slowloris_slowest_probe_ms=round(max(timings) * 1000),
        slowloris_log_lines=len(new_lines),
    )


async def test_a_connection_whose_request_does_not_arrive_in_time_is_dropped(database_url: str) -> None:
    """Under the limit, nothing is shed: the idle, the trickling headers and the trickling body are
    each closed at the request timeout, counted from the connection's start, though bytes keep coming."""
    timeout = GUARD_LIMITS.request_timeout_seconds
    async with guarded_server(database_url, GUARD_LIMITS) as guarded:
        port = guarded.server.port or 0
        async with attackers(port, idle=20, trickling=20) as connected:
            # A body that trickles: the Twilio callback reads its form, within the same deadline.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = (
                b"POST /api/twilio/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
            )
            writer.write(head)

            async def trickle_body() -> None:
                with contextlib.suppress(ConnectionError):
                    while True:
                        writer.write(b"a")
                        await writer.drain()
                        await asyncio.sleep(TRICKLE_INTERVAL_SECONDS)

            body = asyncio.create_task(trickle_body())
            # A kept-alive connection that completed a request is closed after the same idle time.
            kept_reader, kept_writer = await asyncio.open_connection("127.0.0.1", port)
            kept_writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = await kept_reader.readuntil(b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200")
            dropped = await asyncio.gather(
                *(closed_by_server(r, within=timeout * 4) for r in [*connected, kept_reader])
            )
            body_answer = b""
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(timeout * 4):
                    body_answer = await reader.read()
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            writer.close()
            kept_writer.close()
        assert len(connected) == 40
        assert guarded.server.guard.shed == 0
        assert min(dropped) >= timeout * 0.8, dropped  # not before the timeout ...
        assert max(dropped) <= timeout * 2.5, dropped  # ... and not long after it
        assert body_answer.startswith(b"HTTP/1.1 408"), body_answer[:100]
        assert guarded.server.guard.timed_out == 40  # the kept-alive one is not counted as abuse
        assert guarded.server.guard.open_connections == 0
    record(
        SCENARIO,
        request_timeout_test_seconds=timeout,
        dropped_after_seconds=[round(min(dropped), 2), round(max(dropped), 2)],
    )


# --- /readyz tells nothing about the database ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["unreachable", "no such database"])
async def test_readyz_says_not_ready_and_nothing_about_the_database(database_url: str, where: str) -> None:
    url = make_url(database_url)
    if where == "unreachable":
        url = url.set(host="127.0.0.1", port=1, database="flavor_db_f4a17", username="dbuser_f4a17")
    else:
        url = url.set(database="flavor_db_f4a17", username="postgres")
    async with guarded_server(url.render_as_string(hide_password=False), GUARD_LIMITS, ready=False) as guarded:
        guarded.app.lifecycle.become_ready()  # as if it had been ready and the database then went away
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as http:
            answers = []
            for _ in range(3):
                async with http.get(guarded.url + "/readyz") as response:
                    answers.append((response.status, await response.text()))
        logged = [json.loads(line) for line in guarded.lines() if "readiness_changed" in line]
    for status, body in answers:
        assert status == 503
        assert json.loads(body) == {"status": "not ready"}
        for word in ("flavor_db_f4a17", "dbuser_f4a17", "127.0.0.1", "5432", "postgres", "asyncpg", "does not exist"):
            assert word not in body
    # Why goes to the log, once for the three probes, at warning level.
    assert [(entry["level"], entry["problem"]) for entry in logged] == [("warning", "database unreachable")]
    assert logged[0]["error"]


async def test_a_flood_of_malformed_requests_writes_a_line_not_a_flood(database_url: str) -> None:
    """aiohttp logs each request its parser refuses, with a traceback: at most one per interval here."""
    malformed = get_request("/healthz", b"Bad Header Without Colon")
    async with guarded_server(database_url, GUARD_LIMITS) as guarded:
        lines_before = len(guarded.lines())
        statuses: Counter[bytes] = Counter()
        for _ in range(4):  # in batches under the connection limit: this is about the log, not the limit
            statuses.update(
                await asyncio.gather(*(raw_exchange(guarded.server.port or 0, malformed) for _ in range(50)))
            )
        new_lines = guarded.lines()[lines_before:]
    assert {answer.split(b" ", 2)[1] for answer in statuses} == {b"400"}
    assert sum(statuses.values()) == 200
    assert 1 <= len(new_lines) <= 2, new_lines[:5]
    record(SCENARIO, malformed_requests_400=200, malformed_log_lines=len(new_lines))
