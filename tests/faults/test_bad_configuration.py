"""Bad configuration: property-based values for every setting. Whatever the value, loading the
settings either fails with a SettingsError naming the variable (the CLI's exit 2), or succeeds
with a value the daemon can run on, meaning what the operator wrote; never another exception.
A handful of the worst values go through the CLI too: exit 2, one line naming the variable,
no traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from scheduler.cron import OFF
from scheduler.jobs.catalog import schedule_for
from scheduler.limits import PRODUCTION
from scheduler.phones import InvalidPhoneNumber, to_e164
from scheduler.settings import Settings, SettingsError, load_settings, variable_names
from scheduler.triggers import build_trigger
from scheduler.vocabulary import JobName
from tests.faults.support import (
    CRON_SECRET,
    EXPOSURE,
    RESEND_API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_WHATSAPP_NUMBER,
    assert_clean_exit,
    cli_env,
    record,
    run_cli,
)

EXAMPLES_PER_SETTING = 60
HUNDRED_YEARS = timedelta(days=36_525)

# Every setting at a valid value, so that one variable at a time can be varied.
BASE = {
    "DATABASE_URL": "postgresql://app:pw@db.example.com:5432/app",
    "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
    "TWILIO_WHATSAPP_NUMBER": TWILIO_WHATSAPP_NUMBER,
    "RESEND_API_KEY": RESEND_API_KEY,
    "CRON_SECRET": CRON_SECRET,
}
# A value may be refused by naming another variable it conflicts with.
RELATED = {
    "TWILIO_ACCOUNT_SID": {"TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_NUMBER"},
    "TWILIO_AUTH_TOKEN": {"TWILIO_ACCOUNT_SID", "TWILIO_WHATSAPP_NUMBER"},
    "TWILIO_WHATSAPP_NUMBER": {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"},
    "DATABASE_URL_FILE": {"DATABASE_URL"},
    "TWILIO_AUTH_TOKEN_FILE": {"TWILIO_AUTH_TOKEN"},
    "RESEND_API_KEY_FILE": {"RESEND_API_KEY"},
    "CRON_SECRET_FILE": {"CRON_SECRET"},
    "REMINDER_MIN_LEAD_MINUTES": {"BOOKING_REMINDER_HOURS", "PAYMENT_REMINDER_DAYS"},
    "BOOKING_REMINDER_HOURS": {"REMINDER_MIN_LEAD_MINUTES"},
    "PAYMENT_REMINDER_DAYS": {"REMINDER_MIN_LEAD_MINUTES"},
}

TRICKY = [
    "", " ", "0", "-1", "1", " 7 ", "1.0", "1.5", "1e3", "1e-300", "1e309", "inf", "-inf", "nan", "NaN",
    "99999999999999999999", "0x10", "1_000", "\u0661\u0662", "true", "off", "OFF", "* * * * *", "0 0 31 2 *",
    "0 0 30 2 *", "61 * * * *", "*/0 * * * *", "0 2 * * 7", "0 0 29 2 *", "Australia/Perth", "UTC", "/etc/passwd",
    "../../etc/passwd", "Mars/Olympus_Mons", "+61412345678", "0412 345 678", "whatsapp:+14155238886", "12345",
    "a@b.co", "Name <bookings@example.com>", "not an email", "a@b", "x\ny@example.com", "http://", "https://x",
    "http://[::1", "http://h:99999", "http://h:0", "http://a b", "ftp://x.com", "https://api.example.com/",
    "postgresql://", "postgresql://u@h:notaport/db", "postgres://u:p@h/db", "mysql://u@h/db",
    "postgresql+asyncpg://u:p%40ss@h:5432/db?sslmode=require", "postgresql://u:p@[::1]:5432/db", "0.0.0.0", "::",
    "localhost", "not a host", "256.1.1.1", "DEBUG", "debug", "Loud", "json", "CONSOLE", "xml", "65535", "65536",
    "x" * 300, "\u202e\u202d", "\U0001f389", "security,,fraud , ", "HX" + "a" * 32,
]  # fmt: skip

values = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


# --- what an accepted value must be ------------------------------------------------------------------


def _number(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.strip().replace("_", ""))
    except InvalidOperation:
        return None


def _whole(raw: str, value: Any) -> bool:
    number = _number(raw)
    return isinstance(value, int) and number is not None and number.is_finite() and number == value


def _duration(unit: str, minimum: int = 1) -> Callable[[str, Any], bool]:
    def ok(raw: str, value: Any) -> bool:
        if not (_whole(raw, value) and value >= minimum):
            return False
        try:  # the jobs step this far from now, both ways
            span = timedelta(**{unit: value})
            now = datetime.now(UTC)
            return now - span <= now + span and span <= HUNDRED_YEARS
        except OverflowError:
            return False

    return ok


def _rate(raw: str, value: Any) -> bool:
    # Slower than this, the smallest claim (MIN_CLAIM messages) would outlast its lease.
    slowest = PRODUCTION.min_claim / PRODUCTION.delivery_lease_seconds
    return isinstance(value, float) and math.isfinite(value) and value >= slowest


def _seconds(raw: str, value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _cron(raw: str, value: Any) -> bool:
    if value == OFF:
        return " ".join(raw.split()).lower() == OFF
    trigger = build_trigger(value, ZoneInfo("UTC"))
    first = trigger.get_next_fire_time(None, datetime.now(UTC))
    return value == " ".join(raw.split()).lower() and first is not None


def _url(raw: str, value: Any) -> bool:
    if value is None:
        return False
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return False
    clean = not any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0 and clean


def _email(raw: str, value: Any) -> bool:
    address = parseaddr(value)[1]
    clean = not any(unicodedata.category(ch).startswith("C") for ch in value)
    return clean and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address) is not None


def _host(raw: str, value: Any) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value)
        return True
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    return len(value) <= 253 and re.fullmatch(rf"{label}(\.{label})*\.?", value) is not None


def _phone(raw: str, value: Any) -> bool:
    try:
        return value == to_e164(raw)
    except InvalidPhoneNumber:
        return False


def _database_url(raw: str, value: Any) -> bool:
    try:
        url = make_url(Settings.model_construct(database_url=value).async_database_url() or "")
        port = url.port
    except (ValueError, TypeError):
        return False
    return raw.partition("://")[0] in ("postgresql", "postgres", "postgresql+asyncpg") and (
        port is None or 0 < port < 65536
    )


def _same(raw: str, value: Any) -> bool:
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value == raw


def _keep_types(raw: str, value: Any) -> bool:
    return value == tuple(item.strip() for item in raw.split(",") if item.strip())


def _quiet_hours(raw: str, value: Any) -> bool:
    if raw.strip().lower() == "off":
        return value == "off"
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", raw, re.ASCII)
    if match is None:
        return False
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    in_range = max(start_h, end_h) <= 23 and max(start_m, end_m) <= 59 and (start_h, start_m) != (end_h, end_m)
    return in_range and value == f"{start_h:02d}:{start_m:02d}-{end_h:02d}:{end_m:02d}"


def _sms_from(raw: str, value: Any) -> bool:
    sender = raw.strip()
    if sender.startswith("MG"):
        return value == sender and re.fullmatch(r"MG[0-9a-fA-F]{32}", sender) is not None
    return _phone(sender, value)


def _webhook_secret(raw: str, value: Any) -> bool:
    secret = raw.strip()
    try:
        base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return value.get_secret_value() == secret


def _file(raw: str, value: Any) -> bool:
    return False  # never accepted here: BASE sets every secret, so a _FILE twin is a conflict


ORACLES: dict[str, Callable[[str, Any], bool]] = {
    "database_url": _database_url,
    "database_pool_size": lambda raw, value: _whole(raw, value) and value > 0,
    "timezone": lambda raw, value: value == raw and ZoneInfo(value) is not None,
    "stale_booking_hours": _duration("hours"),
    "notification_retention_days": _duration("days"),
    "audit_log_retention_days": _duration("days"),
    "audit_log_keep_event_types": _keep_types,
    "booking_reminder_hours": _duration("hours"),
    "message_max_retry_hours": _duration("hours"),
    "quiet_hours": _quiet_hours,
    "payment_reminder_days": _duration("days"),
    "reminder_min_lead_minutes": _duration("minutes", minimum=0),
    "run_history_retention_days": _duration("days"),
    # The text of a message is kept at most as long as the message: up to the history's 90 days.
    "message_retention_days": lambda raw, value: _duration("days")(raw, value) and value <= 90,
    "delete_batch_size": lambda raw, value: _whole(raw, value) and 0 < value <= 1_000_000,
    "twilio_account_sid": _same,
    "twilio_auth_token": _same,
    "twilio_whatsapp_number": _phone,
    "twilio_api_base_url": _url,
    "twilio_status_callback_url": _url,
    "resend_api_key": _same,
    "email_from": _email,
    "email_reply_to": _email,
    "resend_api_url": _url,
    "whatsapp_max_per_second": _rate,
    "email_max_per_second": _rate,
    "sms_max_per_second": _rate,
    "email_batch_size": lambda raw, value: _whole(raw, value) and 1 <= value <= 100,
    "twilio_sms_from": _sms_from,
    "resend_webhook_secret": _webhook_secret,
    "cron_secret": _same,
    "http_host": _host,
    "http_port": lambda raw, value: _whole(raw, value) and 0 <= value <= 65535,
    "log_level": lambda raw, value: value == raw.upper(),
    "log_format": lambda raw, value: value == raw.lower(),
    "shutdown_timeout_seconds": _seconds,
}
for _name in (variable.lower() for variable in variable_names()):
    if _name.startswith("schedule_"):
        ORACLES[_name] = _cron
    elif _name.startswith("twilio_content_sid_"):
        ORACLES[_name] = _same
    elif _name.startswith("heartbeat_url_"):
        ORACLES[_name] = _url
    elif _name.endswith("_file"):
        ORACLES[_name] = _file

CHECKED = {"accepted": 0, "refused": 0}


def test_every_setting_has_an_oracle() -> None:
    assert set(ORACLES) == {variable.lower() for variable in variable_names()}


def _value(settings: Settings, field: str) -> Any:
    if field.startswith("schedule_"):
        return schedule_for(settings, JobName(field.removeprefix("schedule_")))
    if field.startswith("heartbeat_url_"):
        return settings.heartbeat_url(JobName(field.removeprefix("heartbeat_url_")))
    return getattr(settings, field)


def check(field: str, raw: str) -> None:
    """Load the settings with `raw` in the field's variable (everything else valid) and judge."""
    variable = field.upper()
    with environment({**BASE, variable: raw}):
        try:
            loaded = load_settings(_env_file=None)
        except SettingsError as exc:
            message = str(exc)
            named = {variable} | RELATED.get(variable, set())
            assert any(name in message for name in named), f"{variable}={raw!r}: {message}"
            EXPOSURE.check(f"settings error for {variable}", message)
            CHECKED["refused"] += 1
            return
    if raw == "":
        return  # an empty value counts as unset: the default applies
    value = _value(loaded, field)
    assert ORACLES[field](raw, value), f"{variable}={raw!r} started with {value!r}"
    CHECKED["accepted"] += 1


SETTINGS = sorted(variable.lower() for variable in variable_names())


@pytest.mark.parametrize("field", SETTINGS)
def test_tricky_values_are_refused_by_name_or_right(field: str) -> None:
    for raw in TRICKY:
        check(field, raw)


@pytest.mark.parametrize("field", SETTINGS)
@settings(
    max_examples=EXAMPLES_PER_SETTING,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=values)
def test_any_value_is_refused_by_name_or_right(field: str, raw: str) -> None:
    check(field, raw)


def test_a_secret_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xff\xfe\x00binary")
    with environment({"CRON_SECRET_FILE": str(secret)}), pytest.raises(SettingsError, match="CRON_SECRET_FILE"):
        load_settings(_env_file=None)


# Through the command line: the values that started the daemon wrongly or with a traceback.
CLI_CASES = {
    "DATABASE_URL": "postgresql://app@db.example.com:notaport/app",
    "WHATSAPP_MAX_PER_SECOND": "inf",
    "EMAIL_MAX_PER_SECOND": "1e-300",
    "BOOKING_REMINDER_HOURS": "99999999999",
    "NOTIFICATION_RETENTION_DAYS": "9999999",
    "REMINDER_MIN_LEAD_MINUTES": "1440",
    "SCHEDULE_CLEANUP_EXPIRED_OTPS": "0 0 31 2 *",
    "TWILIO_API_BASE_URL": "http://api.example.com:99999",
    "EMAIL_FROM": "bookings at flavor",
    "HTTP_HOST": "not a host",
    "CRON_SECRET_FILE": "<binary>",
}


async def test_bad_values_stop_the_command_line_by_name(database_url: str, workdir: Path) -> None:
    binary = workdir / "secret.bin"
    binary.write_bytes(b"\xff\xfe\x00")

    async def one(variable: str, value: str) -> tuple[str, Any]:
        env = cli_env(database_url, **{variable: str(binary) if value == "<binary>" else value})
        if variable == "CRON_SECRET_FILE":
            env.pop("CRON_SECRET", None)
        return variable, await run_cli("--run-once", "all", env=env, cwd=workdir)

    runs = await asyncio.gather(*(one(variable, value) for variable, value in CLI_CASES.items()))
    for variable, done in runs:
        assert_clean_exit(done, code=2)
        assert variable in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""
    record(
        "6 bad configuration",
        settings=len(SETTINGS),
        tricky_values_per_setting=len(TRICKY),
        random_examples_per_setting=EXAMPLES_PER_SETTING,
        accepted_checked=CHECKED["accepted"],
        refused_by_name=CHECKED["refused"],
        cli_cases=len(CLI_CASES),
        cli_exit_2=len(runs),
    )
