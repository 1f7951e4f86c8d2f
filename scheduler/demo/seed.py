"""The demo's platform tables and sample data: bookings in every state, so every job has work."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from typing import Any
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler.db.tables import (
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


_PERFORMERS: tuple[tuple[str, str, str | None, str], ...] = (
    ("Scarlett Blaze", "Sarah", "0412 345 678", "scarlett@example.com"),
    ("Velvet Storm", "Vanessa", "+61 423 456 789", "velvet@example.com"),
    ("Midnight Rose", "Rosa", None, "rose@example.com"),
)
_CLIENTS: tuple[tuple[str, str, str, str | None], ...] = (
    ("Jack", "Taylor", "0434 567 890", "jack.taylor@example.com"),
    ("Mia", "Nguyen", "0445 678 901", None),
    ("Oliver", "Smith", "12345", "oliver@example.com"),  # an invalid phone: reported, not fatal
)
_VENUES = ("The Aviary, 140 Murray St, Perth WA 6000", "Crown Perth, Great Eastern Hwy, Burswood WA 6100")


async def insert_demo_round(conn: AsyncConnection, now: datetime) -> int:
    """Add one round of demo rows, dated relative to `now`; returns the round number."""
    round_no = int(await conn.scalar(text("SELECT count(*) FROM clients")) or 0) // len(_CLIENTS) + 1
    client_ids, performer_ids = [], []
    for first, last, client_phone, client_email in _CLIENTS:
        client_id = uuid4()
        client_ids.append(client_id)
        await conn.execute(
            clients.insert().values(
                id=client_id, user_id=uuid4(), first_name=first, last_name=last, phone=client_phone, email=client_email
            )
        )
    for stage, first, phone, email in _PERFORMERS:
        performer_id = uuid4()
        performer_ids.append(performer_id)
        await conn.execute(
            performers.insert().values(
                id=performer_id,
                user_id=uuid4(),
                stage_name=stage,
                first_name=first,
                last_name="",
                phone=phone,
                email=email,
            )
        )

    def booking(n: int, **values: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": uuid4(),
            "booking_reference": f"FE-D{round_no:02d}-{n:02d}",
            "client_id": client_ids[n % len(client_ids)],
            "performer_id": performer_ids[n % len(performer_ids)],
            "event_type": "birthday_party",
            "event_date": now + timedelta(days=10),
            "duration_hours": Decimal(2),
            "guest_count": 30,
            "venue_address": _VENUES[n % len(_VENUES)],
            "total_amount": Decimal("1250.00"),
            "deposit_amount": Decimal("250.00"),
            "status": "confirmed",
            "payment_status": "deposit_paid",
            "payment_method": "card",
            "created_at": now - timedelta(days=5),
            "updated_at": now - timedelta(days=5),
        }
        base.update(values)
        return base

    rows = [
        # stale: pending for two days without a deposit -> cancelled
        booking(1, status="pending", payment_status="pending", created_at=now - timedelta(hours=50)),
        booking(2, status="pending", payment_status="pending", created_at=now - timedelta(hours=30)),
        # pending but recent -> left alone
        booking(3, status="pending", payment_status="pending", created_at=now - timedelta(hours=3)),
        # event tomorrow -> booking reminder; balance due -> payment reminder
        booking(4, event_date=now + timedelta(hours=20)),
        booking(5, event_date=now + timedelta(hours=6), payment_status="paid", deposit_amount=Decimal("1250.00")),
        # balance due in two days -> payment reminder only
        booking(6, event_date=now + timedelta(days=2), status="in_progress"),
        # too close (30 minutes) -> nothing
        booking(7, event_date=now + timedelta(minutes=30)),
        # far away, completed, cancelled -> nothing
        booking(8),
        booking(9, status="completed", event_date=now - timedelta(days=3)),
        booking(10, status="cancelled", payment_status="refunded"),
    ]
    await conn.execute(bookings.insert(), rows)
    await conn.execute(
        notification_preferences.insert().values(
            user_id=await conn.scalar(
                clients.select().with_only_columns(clients.c.user_id).where(clients.c.id == client_ids[1])
            ),
            email_notifications=True,
            sms_notifications=False,
            payment_reminders=True,
        )
    )
    old, recent = now - timedelta(days=45), now - timedelta(days=2)
    await conn.execute(
        notifications.insert(),
        [
            {
                "id": uuid4(),
                "user_id": uuid4(),
                "type": "info",
                "title": "Old and read",
                "message": "-",
                "is_read": True,
                "created_at": old,
            },
            {
                "id": uuid4(),
                "user_id": uuid4(),
                "type": "info",
                "title": "Old, unread",
                "message": "-",
                "is_read": False,
                "created_at": old,
            },
            {
                "id": uuid4(),
                "user_id": uuid4(),
                "type": "info",
                "title": "Recent",
                "message": "-",
                "is_read": True,
                "created_at": recent,
            },
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
                "id": uuid4(),
                "event_type": "login",
                "action": "signed_in",
                "details": {},
                "timestamp": now - timedelta(days=120),
            },
            {
                "id": uuid4(),
                "event_type": "security",
                "action": "password_reset",
                "details": {},
                "timestamp": now - timedelta(days=120),
            },
        ],
    )
    return round_no
