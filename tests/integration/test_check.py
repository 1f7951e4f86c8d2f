"""`--check`: settings, database, tables, migrations and provider credentials, one line each."""

from __future__ import annotations

import asyncio
import io

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.check import run_checks
from scheduler.settings import Settings
from tests.acceptance.cli import clean_env, run_cli
from tests.database import DatabaseFactory, to_libpq
from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeResend, FakeTwilio


def configured(database_url: str, twilio: FakeTwilio, resend: FakeResend, **overrides: str) -> Settings:
    values = {
        "database_url": to_libpq(database_url),
        "twilio_account_sid": TWILIO_ACCOUNT_SID,
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "twilio_whatsapp_number": TWILIO_WHATSAPP_NUMBER,
        "twilio_api_base_url": twilio.url,
        "resend_api_key": RESEND_API_KEY,
        "resend_api_url": resend.url,
        **overrides,
    }
    return Settings(_env_file=None, **values)


async def check(settings: Settings) -> tuple[int, dict[str, str]]:
    out = io.StringIO()
    code = await run_checks(settings, out=out)
    lines = {line.split()[1]: line for line in out.getvalue().splitlines()}
    return code, lines


async def test_all_pass(database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend) -> None:
    code, lines = await check(configured(database_url, twilio_server, resend_server))
    assert code == 0, lines
    assert set(lines) == {"settings", "database", "tables", "migrations", "whatsapp", "email"}
    assert all(line.startswith("ok") for line in lines.values()), lines
    assert "PostgreSQL" in lines["database"]
    assert TWILIO_ACCOUNT_SID not in lines["whatsapp"]  # masked
    assert [r.route for r in twilio_server.requests] == ["account"]  # a harmless call, nothing sent
    assert [r.route for r in resend_server.requests] == ["domains"]


async def test_wrong_credentials_fail_their_line(
    database_url: str, twilio_server: FakeTwilio, resend_server: FakeResend
) -> None:
    settings = configured(
        database_url, twilio_server, resend_server, twilio_auth_token="wrong-token-123", resend_api_key="re_wrong_456"
    )
    code, lines = await check(settings)
    assert code == 1
    assert lines["whatsapp"].startswith("FAIL") and "401" in lines["whatsapp"]
    assert lines["email"].startswith("FAIL")
    assert lines["database"].startswith("ok")
    assert "wrong-token-123" not in "".join(lines.values())
    assert "re_wrong_456" not in "".join(lines.values())


async def test_channels_off_pass(database_url: str) -> None:
    code, lines = await check(Settings(_env_file=None, database_url=to_libpq(database_url)))
    assert code == 0
    assert lines["whatsapp"].startswith("off") and lines["email"].startswith("off")


async def test_unreachable_database_fails() -> None:
    code, lines = await check(Settings(_env_file=None, database_url="postgresql://app:Pw0rd-9x@127.0.0.1:1/db"))
    assert code == 1
    assert lines["database"].startswith("FAIL")
    assert "Pw0rd-9x" not in lines["database"]


async def test_missing_tables_and_unmigrated_schema(test_databases: DatabaseFactory) -> None:
    url = await test_databases.create(migrated=False)
    try:
        code, lines = await check(Settings(_env_file=None, database_url=to_libpq(url)))
    finally:
        await test_databases.drop(url)
    assert code == 1
    assert lines["tables"].startswith("FAIL") and "bookings" in lines["tables"]
    assert lines["migrations"].startswith("warn")


async def test_missing_optional_table_warns(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE otp_codes"))
    code, lines = await check(Settings(_env_file=None, database_url=to_libpq(database_url)))
    assert code == 0
    assert lines["tables"].startswith("warn") and "otp_codes" in lines["tables"]


def test_check_from_the_command_line(database_url: str) -> None:
    done = run_cli("--check", env=clean_env(DATABASE_URL=to_libpq(database_url)))
    assert done.code == 0, done.stdout + done.stderr
    assert len(done.stdout.strip().splitlines()) == 6


# --- a platform table the daemon writes to with a NOT NULL column it does not fill -------------


async def test_unfilled_not_null_column_fails_naming_table_and_column(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_logs ADD COLUMN ip_address inet NOT NULL"))
        await conn.execute(text("ALTER TABLE notifications ALTER COLUMN id DROP DEFAULT"))  # the id it relies on
    code, lines = await check(Settings(_env_file=None, database_url=to_libpq(database_url)))
    assert code == 1
    assert lines["tables"].startswith("FAIL"), lines["tables"]
    assert "'audit_logs'" in lines["tables"] and "ip_address" in lines["tables"]
    assert "'notifications'" in lines["tables"] and ": id" in lines["tables"]
    assert all(line.startswith(("ok", "off")) for name, line in lines.items() if name != "tables"), lines


async def test_not_null_columns_the_daemon_need_not_fill_pass(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for statement in (
            "ALTER TABLE audit_logs ADD COLUMN source text NOT NULL DEFAULT 'app'",  # a default fills it
            "ALTER TABLE audit_logs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY",
            "ALTER TABLE notifications ADD COLUMN audience text GENERATED ALWAYS AS (type || ':') STORED",
            "ALTER TABLE notifications ALTER COLUMN user_id SET NOT NULL",  # the daemon fills it
            "ALTER TABLE bookings ADD COLUMN quote_id uuid NOT NULL",  # bookings are only updated
        ):
            await conn.execute(text(statement))
    code, lines = await check(Settings(_env_file=None, database_url=to_libpq(database_url)))
    assert code == 0, lines
    assert lines["tables"].startswith("ok"), lines["tables"]


async def test_unfilled_not_null_column_fails_the_check_from_the_command_line(
    database_url: str, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_logs ADD COLUMN ip_address inet NOT NULL"))
    done = await asyncio.to_thread(run_cli, "--check", env=clean_env(DATABASE_URL=to_libpq(database_url)))
    assert done.code == 1, done.stdout + done.stderr
    [tables] = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["tables"]]
    assert tables.startswith("FAIL") and "audit_logs" in tables and "ip_address" in tables
    assert "Traceback" not in done.stderr
