"""The demo's platform tables and data: the same people and bookings every start, dated relative to now,
one booking for each path through the jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from importlib.resources import files
from typing import Any
from uuid import UUID, uuid5

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler.db.tables import (
    OWN_SCHEMA,
    audit_logs,
    bookings,
    clients,
    notification_preferences,
    notifications,
    otp_codes,
    performers,
)


def platform_schema_sql() -> list[str]:
    """The statements that create the platform's tables (demo and tests only)."""
    script = files("scheduler.demo").joinpath("platform_schema.sql").read_text(encoding="utf-8")
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


async def create_platform_tables(conn: AsyncConnection) -> None:
    for statement in platform_schema_sql():
        await conn.execute(text(statement))


async def ensure_database(admin: AsyncEngine, name: str) -> None:
    """Create the database unless it exists (CREATE DATABASE cannot run in a transaction)."""
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")  # in place: CREATE DATABASE, VACUUM
        exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))


# Stable ids: the same people and bookings every start, so the data never piles up.
_NAMESPACE = UUID("6f1c7f0e-9d1a-4c51-b7a4-2c3f3d0d5e11")
DEMO_REFERENCE_PREFIX = "FE-DEMO-"
# The WhatsApp message of this booking's client fails once as if the provider timed out, so the
# demo shows a message retried (see scheduler/demo/transports.py).
FLAKY_REFERENCE = f"{DEMO_REFERENCE_PREFIX}03"
# This booking's event reminder fell due in the latest quiet hours and was held until they ended;
# laid only where quiet hours are on (see scheduler/demo/last_night.py).
HELD_REFERENCE = f"{DEMO_REFERENCE_PREFIX}10"


def _id(name: str) -> UUID:
    return uuid5(_NAMESPACE, name)


# (key, stage name, first name, phone, email)
_PERFORMERS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("scarlett", "Scarlett Blaze", "Sarah", "0412 345 678", "scarlett@example.com"),
    ("velvet", "Velvet Storm", "Vanessa", "+61 423 456 789", "velvet@example.com"),
    ("rose", "Midnight Rose", "Rosa", None, "rose@example.com"),  # no phone: no WhatsApp, not an error
)
# (key, first name, last name, phone, email)
_CLIENTS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("jack", "Jack", "Taylor", "0434 567 890", "jack.taylor@example.com"),
    ("mia", "Mia", "Nguyen", "0445 678 901", "mia.nguyen@example.com"),  # has turned WhatsApp off
    ("oliver", "Oliver", "Smith", "0456 789 012", None),  # no email address
)
_VENUES = ("The Aviary, 140 Murray St, Perth WA 6000", "Crown Perth, Great Eastern Hwy, Burswood WA 6100")


def _next_quarter_hour(moment: datetime) -> datetime:
    past = timedelta(minutes=moment.minute % 15, seconds=moment.second, microseconds=moment.microsecond)
    return moment - past + timedelta(minutes=15) if past else moment


def _booking(n: int, client: str, performer: str, now: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": _id(f"booking:{n}"),
        "booking_reference": f"{DEMO_REFERENCE_PREFIX}{n:02d}",
        "client_id": _id(f"client:{client}"),
        "performer_id": _id(f"performer:{performer}"),
        "event_type": "birthday_party",
        "event_date": now + timedelta(days=10),
        "duration_hours": Decimal(2),
        "guest_count": 30,
        "venue_address": _VENUES[n % len(_VENUES)],
        "special_requirements": None,
        "total_amount": Decimal("1250.00"),
        "deposit_amount": Decimal("250.00"),
        "status": "confirmed",
        "payment_status": "deposit_paid",
        "payment_method": "card",
        "created_at": now - timedelta(days=5),
        "updated_at": now - timedelta(days=5),
    }
    row.update(values)
    return row


def _demo_bookings(now: datetime) -> list[dict[str, Any]]:
    """One booking per path through the jobs, dated relative to `now`."""

    unpaid: dict[str, Any] = {"status": "pending", "payment_status": "pending"}
    now = _next_quarter_hour(now)  # events at 7:15 pm rather than 7:13 pm; every window still holds
    booking = partial(_booking, now=now)
    return [
        # pending two days without a deposit -> cancelled; both sides notified
        booking(1, "jack", "scarlett", **unpaid, created_at=now - timedelta(hours=50)),
        # pending, but booked three hours ago -> left alone
        booking(2, "oliver", "velvet", **unpaid, created_at=now - timedelta(hours=3)),
        # event in 20 hours, balance due -> event reminder to both, balance reminder to the client
        booking(3, "jack", "velvet", event_date=now + timedelta(hours=20), event_type="hens_night"),
        # event in 6 hours, paid in full -> event reminder only; Mia gets hers by email, not WhatsApp
        booking(
            4,
            "mia",
            "rose",
            event_date=now + timedelta(hours=6),
            payment_status="paid",
            deposit_amount=Decimal("1250.00"),
        ),
        # under way, event in two days, balance due -> balance reminder only
        booking(5, "oliver", "scarlett", event_date=now + timedelta(days=2), status="in_progress"),
        # event in 30 minutes: too close to remind -> nothing
        booking(6, "jack", "rose", event_date=now + timedelta(minutes=30)),
        # far away, completed, cancelled -> nothing
        booking(7, "mia", "scarlett"),
        booking(8, "oliver", "velvet", status="completed", event_date=now - timedelta(days=3), payment_status="paid"),
        booking(9, "jack", "scarlett", status="cancelled", payment_status="refunded"),
    ]


def _held_booking(now: datetime, event_date: datetime) -> dict[str, Any]:
    """Paid in full: owed an event reminder only, from a day before `event_date`."""
    return _booking(
        10,
        "jack",
        "scarlett",
        now,
        event_type="engagement_party",
        event_date=event_date,
        payment_status="paid",
        deposit_amount=Decimal("1250.00"),
    )


async def reset_demo_data(conn: AsyncConnection, now: datetime, *, held_event_date: datetime | None = None) -> None:
    """Begin the demo data afresh, with none of the daemon's own state: its people and, with
    `held_event_date`, the booking of the quiet-hours path; insert_demo_data lays the rest."""
    await conn.execute(
        text("TRUNCATE bookings, clients, performers, notifications, otp_codes, audit_logs, notification_preferences")
    )
    own = await conn.scalars(
        text(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = :schema AND tablename <> 'alembic_version'"
        ),
        {"schema": OWN_SCHEMA},
    )
    own_tables = list(own)
    if own_tables:  # the run history, the reminder ledger and the outbox of the previous start
        await conn.execute(text(f"TRUNCATE {', '.join(own_tables)}"))
    await _insert_people(conn)
    if held_event_date is not None:
        await conn.execute(bookings.insert(), [_held_booking(now, held_event_date)])


async def _insert_people(conn: AsyncConnection) -> None:
    await conn.execute(
        clients.insert(),
        [
            {
                "id": _id(f"client:{key}"),
                "user_id": _id(f"user:client:{key}"),
                "first_name": first,
                "last_name": last,
                "phone": phone,
                "email": email,
            }
            for key, first, last, phone, email in _CLIENTS
        ],
    )
    await conn.execute(
        performers.insert(),
        [
            {
                "id": _id(f"performer:{key}"),
                "user_id": _id(f"user:performer:{key}"),
                "stage_name": stage,
                "first_name": first,
                "last_name": "",
                "phone": phone,
                "email": email,
            }
            for key, stage, first, phone, email in _PERFORMERS
        ],
    )
    await conn.execute(
        notification_preferences.insert().values(
            user_id=_id("user:client:mia"), email_notifications=True, sms_notifications=False, payment_reminders=True
        )
    )


async def insert_demo_data(conn: AsyncConnection, now: datetime) -> None:
    """The bookings of every other path through the jobs, and the rows the cleanups prune, dated
    relative to `now` (after reset_demo_data)."""
    await conn.execute(bookings.insert(), _demo_bookings(now))
    old, recent = now - timedelta(days=45), now - timedelta(days=2)
    notices = [("Old and read", True, old), ("Old, unread: kept", False, old), ("Recent", True, recent)]
    await conn.execute(
        notifications.insert(),
        [
            {
                "id": _id(f"notification:{n}"),
                "user_id": _id("user:client:jack"),
                "type": "info",
                "title": title,
                "message": "-",
                "is_read": is_read,
                "created_at": created,
            }
            for n, (title, is_read, created) in enumerate(notices)
        ],
    )
    await conn.execute(
        otp_codes.insert(),
        [{"expires_at": now - timedelta(minutes=10)}, {"expires_at": now + timedelta(minutes=5)}],
    )
    await conn.execute(
        audit_logs.insert(),
        [
            {
                "id": _id(f"audit:{n}"),
                "event_type": event_type,
                "action": action,
                "details": {},
                "timestamp": now - timedelta(days=120),
            }
            for n, (event_type, action) in enumerate((("login", "signed_in"), ("security", "password_reset")))
        ],
    )
