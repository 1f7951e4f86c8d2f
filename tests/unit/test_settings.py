"""Settings: every variable typed and validated at start, bad values named, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.jobs.catalog import schedule_for
from scheduler.settings import SettingsError, load_settings
from scheduler.vocabulary import JobName


def load(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch)
    assert settings.timezone == "Australia/Perth"
    assert settings.database_pool_size == 5
    assert (settings.stale_booking_hours, settings.notification_retention_days, settings.audit_log_retention_days) == (
        24,
        30,
        90,
    )
    assert settings.audit_log_keep_event_types == ("security", "fraud", "dispute")
    assert (settings.booking_reminder_hours, settings.payment_reminder_days, settings.reminder_min_lead_minutes) == (
        24,
        3,
        60,
    )
    assert settings.delete_batch_size == 5000
    assert (settings.whatsapp_max_per_second, settings.email_max_per_second) == (10, 2)
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 9464)
    assert settings.shutdown_timeout_seconds == 30
    assert settings.email_from == "bookings@flavorentertainers.com.au"
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.resend_api_url == "https://api.resend.com"
    assert schedule_for(settings, JobName.CLEANUP_STALE_BOOKINGS) == "0 2 * * *"
    assert schedule_for(settings, JobName.SEND_BOOKING_REMINDERS) == "0 * * * *"
    assert schedule_for(settings, JobName.DELIVER_PENDING_MESSAGES) == "*/5 * * * *"
    assert not settings.whatsapp_enabled
    assert not settings.email_enabled


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TIMEZONE", "Mars/Olympus_Mons", "TIMEZONE: unknown time zone"),
        ("SCHEDULE_SEND_BOOKING_REMINDERS", "* * * *", "SCHEDULE_SEND_BOOKING_REMINDERS"),
        ("SCHEDULE_CLEANUP_EXPIRED_OTPS", "61 * * * *", "SCHEDULE_CLEANUP_EXPIRED_OTPS"),
        ("SCHEDULE_CLEANUP_OLD_AUDIT_LOGS", "0 2 * * 8", "SCHEDULE_CLEANUP_OLD_AUDIT_LOGS"),
        ("STALE_BOOKING_HOURS", "twenty", "STALE_BOOKING_HOURS"),
        ("STALE_BOOKING_HOURS", "0", "STALE_BOOKING_HOURS"),
        ("DELETE_BATCH_SIZE", "-5", "DELETE_BATCH_SIZE"),
        ("DATABASE_POOL_SIZE", "1.5", "DATABASE_POOL_SIZE"),
        ("HTTP_PORT", "70000", "HTTP_PORT"),
        ("EMAIL_MAX_PER_SECOND", "0", "EMAIL_MAX_PER_SECOND"),
        ("TWILIO_API_BASE_URL", "not a url", "TWILIO_API_BASE_URL"),
        ("RESEND_API_URL", "ftp://example.com", "RESEND_API_URL"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("DATABASE_URL", "mysql://user:pw@host/db", "DATABASE_URL"),
        ("TWILIO_ACCOUNT_SID", "AC123", "TWILIO_AUTH_TOKEN"),
        ("TWILIO_WHATSAPP_NUMBER", "not-a-number", "TWILIO_WHATSAPP_NUMBER"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        load(monkeypatch, **{variable: value})


def test_schedule_off_and_standard_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, SCHEDULE_SEND_PAYMENT_REMINDERS="OFF", SCHEDULE_CLEANUP_EXPIRED_OTPS="*/30  3 * * 7")
    assert schedule_for(settings, JobName.SEND_PAYMENT_REMINDERS) == "off"
    assert schedule_for(settings, JobName.CLEANUP_EXPIRED_OTPS) == "*/30 3 * * 7"


def test_keep_types_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, AUDIT_LOG_KEEP_EVENT_TYPES=" security , payments,, ")
    assert settings.audit_log_keep_event_types == ("security", "payments")


def test_database_url_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = load(monkeypatch, DATABASE_URL="postgresql://u:p@db:5432/app")
    assert plain.async_database_url() == "postgresql+asyncpg://u:p@db:5432/app"
    supabase = load(monkeypatch, DATABASE_URL="postgresql://u:p@pooler.supabase.com:6543/postgres?sslmode=require")
    assert supabase.async_database_url() == "postgresql+asyncpg://u:p@pooler.supabase.com:6543/postgres?ssl=require"
    driver = load(monkeypatch, DATABASE_URL="postgresql+asyncpg://u:p@db:5432/app")
    assert driver.async_database_url() == "postgresql+asyncpg://u:p@db:5432/app"


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql://app:s3cret-pw@db/app\n")
    (tmp_path / "token").write_text("tok-123456")
    settings = load(
        monkeypatch,
        DATABASE_URL_FILE=str(tmp_path / "db"),
        TWILIO_AUTH_TOKEN_FILE=str(tmp_path / "token"),
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_WHATSAPP_NUMBER="+14155238886",
    )
    assert settings.async_database_url() == "postgresql+asyncpg://app:s3cret-pw@db/app"
    assert settings.whatsapp_enabled
    assert set(settings.secret_values()) >= {"tok-123456", "s3cret-pw"}


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CRON_SECRET_FILE"):
        load(monkeypatch, CRON_SECRET_FILE=str(tmp_path / "missing"))


def test_secret_values_never_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        load(monkeypatch, DATABASE_URL="mysql://user:hunter2-secret@host/db", RESEND_API_KEY="re_abc", HTTP_PORT="x")
    assert "hunter2-secret" not in str(caught.value)
    assert "re_abc" not in str(caught.value)
    assert "HTTP_PORT" in str(caught.value)
    monkeypatch.delenv("HTTP_PORT")
    assert "hunter2" not in repr(load(monkeypatch, DATABASE_URL="postgresql://u:hunter2@h/db"))


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STALE_BOOKING_HOURS=48\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().stale_booking_hours == 48
