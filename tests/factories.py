"""Rows for the platform's tables, with sensible defaults that each test overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.tables import (
    audit_logs,
    bookings,
    clients,
    notification_preferences,
    notifications,
    otp_codes,
    performers,
)

_numbers = count(1)


async def add_client(engine: AsyncEngine, **values: Any) -> dict[str, Any]:
    n = next(_numbers)
    row = {
        "id": uuid4(),
        "user_id": uuid4(),
        "first_name": "Jane",
        "last_name": "Citizen",
        "email": f"jane{n}@example.com",
        "phone": f"0412 345 {n % 1000:03d}",
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(clients.insert().values(**row))
    return row


async def add_performer(engine: AsyncEngine, **values: Any) -> dict[str, Any]:
    n = next(_numbers)
    row = {
        "id": uuid4(),
        "user_id": uuid4(),
        "stage_name": "Scarlett Blaze",
        "first_name": "Sarah",
        "last_name": "Jones",
        "email": f"scarlett{n}@example.com",
        "phone": f"0423 456 {n % 1000:03d}",
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(performers.insert().values(**row))
    return row


async def add_booking(
    engine: AsyncEngine,
    *,
    client: dict[str, Any] | None = None,
    performer: dict[str, Any] | None = None,
    **values: Any,
) -> dict[str, Any]:
    """A confirmed booking with a deposit paid, its event ten days after `created_at`."""
    n = next(_numbers)
    client = client or await add_client(engine)
    performer = performer or await add_performer(engine)
    created = values.pop("created_at", datetime(2026, 11, 20, tzinfo=UTC))
    row = {
        "id": uuid4(),
        "booking_reference": f"FE-{n:05d}",
        "client_id": client["id"],
        "performer_id": performer["id"],
        "event_type": "birthday_party",
        "event_date": created + timedelta(days=10),
        "duration_hours": Decimal(2),
        "guest_count": 20,
        "venue_address": "140 Murray St, Perth WA 6000",
        "special_requirements": None,
        "total_amount": Decimal("1250.00"),
        "deposit_amount": Decimal("250.00"),
        "status": "confirmed",
        "payment_status": "deposit_paid",
        "payment_method": "card",
        "created_at": created,
        "updated_at": created,
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(bookings.insert().values(**row))
    return {**row, "client": client, "performer": performer}


async def add_notification(engine: AsyncEngine, **values: Any) -> UUID:
    row = {"id": uuid4(), "user_id": uuid4(), "type": "info", "title": "t", "message": "m", "is_read": False, **values}
    async with engine.begin() as conn:
        await conn.execute(notifications.insert().values(**row))
    return UUID(str(row["id"]))


async def add_otp(engine: AsyncEngine, expires_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(otp_codes.insert().values(expires_at=expires_at))


async def add_audit(engine: AsyncEngine, **values: Any) -> None:
    row = {"id": uuid4(), "event_type": "login", "action": "a", "details": {}, **values}
    async with engine.begin() as conn:
        await conn.execute(audit_logs.insert().values(**row))


async def set_preferences(engine: AsyncEngine, user_id: UUID, **values: bool) -> None:
    row = {
        "user_id": user_id,
        "email_notifications": True,
        "sms_notifications": True,
        "payment_reminders": True,
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(notification_preferences.insert().values(**row))


async def fetch(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    """One statement, committed; also those that cannot run in a transaction (VACUUM)."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(sql), params)
