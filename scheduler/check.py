"""`flavor-scheduler --check`: the operator's first step when something is wrong.

Settings, the database (reachable, platform tables, our migrations) and each enabled channel's
credentials, checked with harmless calls; one line per check; exit 0 when all pass, else 1.
Nothing is changed: no migration runs, no message is sent.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy import text

from scheduler.app import build_transports
from scheduler.clock import SystemClock
from scheduler.db import migrate
from scheduler.db.database import Database
from scheduler.db.engine import create_engine
from scheduler.db.errors import DatabaseError
from scheduler.db.platform import PlatformSchemaError, PlatformTables, inspect_platform
from scheduler.db.tables import OPTIONAL_TABLES
from scheduler.jobs.catalog import JOBS, enabled_schedules
from scheduler.metrics import Metrics
from scheduler.notify.transport import SendError
from scheduler.redact import redact_text
from scheduler.settings import Settings
from scheduler.vocabulary import Channel

CHECK_TIMEOUT_SECONDS = 15.0  # each check; a provider or database slower than this is a finding


@dataclass(frozen=True, slots=True)
class CheckLine:
    status: str  # "ok", "warn", "off" pass; "FAIL" does not
    name: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"

    def render(self) -> str:
        return f"{self.status:<4}  {self.name:<10}  {self.detail}"


async def run_checks(settings: Settings, *, demo: bool = False, out: TextIO | None = None) -> int:
    """Run every check, print one line each, return the exit status."""
    out = out or sys.stdout
    secrets = settings.secret_values()
    lines: list[CheckLine] = [_settings_line(settings)]
    lines += await _database_lines(settings)
    lines += await _channel_lines(settings, demo=demo)
    for line in lines:
        print(redact_text(line.render(), secrets), file=out)
    return 0 if all(line.passed for line in lines) else 1


def _settings_line(settings: Settings) -> CheckLine:
    enabled = enabled_schedules(settings)
    return CheckLine("ok", "settings", f"valid; {len(enabled)} of {len(JOBS)} jobs scheduled in {settings.timezone}")


async def _database_lines(settings: Settings) -> list[CheckLine]:
    url = settings.async_database_url()
    if url is None:
        return [CheckLine("FAIL", "database", "DATABASE_URL is not set")]
    db = Database(create_engine(url, pool_size=1))
    lines: list[CheckLine] = []
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), db.connect() as conn:
            version = await conn.scalar(text("SHOW server_version"))
            lines.append(CheckLine("ok", "database", f"reachable (PostgreSQL {version})"))
            try:
                tables = PlatformTables()
                await inspect_platform(conn, tables)
                missing = tables.missing(table.name for table in OPTIONAL_TABLES)
                if tables.unfilled:
                    also = f"; optional missing: {', '.join(missing)}" if missing else ""
                    lines.append(CheckLine("FAIL", "tables", _unfilled_detail(tables.unfilled) + also))
                elif missing:
                    lines.append(
                        CheckLine("warn", "tables", f"required present; optional missing: {', '.join(missing)}")
                    )
                else:
                    lines.append(CheckLine("ok", "tables", "required and optional platform tables present"))
            except PlatformSchemaError as exc:
                lines.append(CheckLine("FAIL", "tables", str(exc)))
        lines.append(await _migrations_line(db))
    except TimeoutError:
        lines.append(CheckLine("FAIL", "database", f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"))
    except DatabaseError as exc:
        lines.append(CheckLine("FAIL", "database", f"unreachable: {exc}"))
    finally:
        await db.dispose()
    return lines


def _unfilled_detail(unfilled: dict[str, tuple[str, ...]]) -> str:
    named = "; ".join(
        f"table {table!r} has NOT NULL column(s) without a default that the daemon does not fill: {', '.join(columns)}"
        for table, columns in unfilled.items()
    )
    return f"{named} (every row the daemon writes there would be refused: add a default or allow NULL)"


async def _migrations_line(db: Database) -> CheckLine:
    head = migrate.head_revision()
    current = await migrate.current_revision(db)
    if current == head:
        return CheckLine("ok", "migrations", f"schema flavor_scheduler at {head}")
    if current is None:
        return CheckLine(
            "warn", "migrations", f"schema flavor_scheduler not created yet; the daemon creates it at start ({head})"
        )
    return CheckLine(
        "FAIL",
        "migrations",
        f"schema flavor_scheduler at {current}, this version expects {head}: upgrade or downgrade the daemon",
    )


async def _channel_lines(settings: Settings, *, demo: bool) -> list[CheckLine]:
    transports = build_transports(settings, Metrics.unregistered(), SystemClock(), demo=demo)
    lines: list[CheckLine] = []
    try:
        for channel, variables in ((Channel.WHATSAPP, "TWILIO_*"), (Channel.EMAIL, "RESEND_API_KEY")):
            transport = transports.get(channel)
            if transport is None:
                lines.append(
                    CheckLine("off", channel.value, f"channel off ({variables} unset): messages recorded as skipped")
                )
                continue
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    detail = await transport.check()
                lines.append(CheckLine("ok", channel.value, f"{transport.provider}: {detail}"))
            except TimeoutError:
                lines.append(
                    CheckLine(
                        "FAIL", channel.value, f"{transport.provider}: no answer within {CHECK_TIMEOUT_SECONDS:g} s"
                    )
                )
            except SendError as exc:
                lines.append(CheckLine("FAIL", channel.value, f"{transport.provider}: {exc.reason}"))
    finally:
        for transport in transports.values():
            await transport.aclose()
    return lines
