"""The console's small parsers: what an operator may type, and the URL read without SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url

from scheduler.console.when import BadValue, parse_limit, parse_since
from scheduler.database_url import url_parts
from scheduler.db import console_changes, console_sql
from scheduler.db.tables import OWN_SCHEMA

PERTH = ZoneInfo("Australia/Perth")
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)  # 18:00 in Perth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("6h", NOW - timedelta(hours=6)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("today", datetime(2026, 11, 29, tzinfo=PERTH)),
        ("yesterday", datetime(2026, 11, 28, tzinfo=PERTH)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=PERTH)),
        ("2026-11-01 18:30", datetime(2026, 11, 1, 18, 30, tzinfo=PERTH)),
        ("2026-11-01T18:30+00:00", datetime(2026, 11, 1, 18, 30, tzinfo=UTC)),
    ],
)
def test_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW, tz=PERTH) == expected


@pytest.mark.parametrize("text", ["last tuesday", "5 parsecs", "-2h", ""])
def test_since_refused_saying_what_it_takes(text: str) -> None:
    with pytest.raises(BadValue, match="30m, 6h, 2d, 1w"):
        parse_since(text, now=NOW, tz=PERTH)


def test_limit() -> None:
    assert parse_limit("20") == 20
    for bad in ("0", "-1", "many", "10001"):
        with pytest.raises(BadValue, match="1 to 10000"):
            parse_limit(bad)


def test_ids_whole_or_a_prefix_of_eight() -> None:
    whole = "3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
    assert console_changes.id_range(whole) == (UUID(whole), UUID(whole))
    low, high = console_changes.id_range("3F2A1B9C") or (None, None)
    assert (str(low), str(high)) == (
        "3f2a1b9c-0000-0000-0000-000000000000",
        "3f2a1b9c-ffff-ffff-ffff-ffffffffffff",
    )
    for bad in ("3f2a1b9", "not-an-id", "3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c0", "g" * 8):
        assert console_changes.id_range(bad) is None


def test_the_console_names_our_schema_as_the_tables_do() -> None:
    assert console_sql.SCHEMA == OWN_SCHEMA


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://app:s3cr%40t@db.example.com:6543/platform",
        "postgresql+asyncpg://app@/flavor_demo?host=/tmp/socket",
        "postgresql+asyncpg://app:pw@[2001:db8::1]:5432/db?application_name=x",
        "postgresql+asyncpg://db.example.com/db",
        "postgresql+asyncpg://u:p:q@h/d",
        "postgresql+asyncpg://localhost",
    ],
)
def test_url_parts_read_as_sqlalchemy_reads_them(url: str) -> None:
    ours, theirs = url_parts(url), make_url(url)
    assert (ours.username, ours.password, ours.host, ours.port, ours.database) == (
        theirs.username,
        theirs.password,
        theirs.host,
        theirs.port,
        theirs.database,
    )
    assert ours.query == dict(theirs.query)


def test_a_bad_port_is_refused_as_sqlalchemy_refuses_it() -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        make_url("postgresql+asyncpg://u@h:port/d").port  # noqa: B018
    with pytest.raises(ValueError, match="invalid literal for int"):
        url_parts("postgresql+asyncpg://u@h:port/d")
