"""Settings: every variable typed and validated at start, bad values named, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from scheduler import database_url
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
    assert (settings.run_history_retention_days, settings.message_retention_days) == (90, 30)
    assert schedule_for(settings, JobName.CLEANUP_SCHEDULER_HISTORY) == "30 2 * * *"
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
        ("RUN_HISTORY_RETENTION_DAYS", "0", "RUN_HISTORY_RETENTION_DAYS"),
        ("MESSAGE_RETENTION_DAYS", "thirty", "MESSAGE_RETENTION_DAYS"),
        # Messages go with the history: a longer text retention would be a promise not kept.
        ("MESSAGE_RETENTION_DAYS", "120", "MESSAGE_RETENTION_DAYS .120. must not exceed RUN_HISTORY_RETENTION_DAYS"),
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
    assert supabase.async_database_url() == "postgresql+asyncpg://u:p@pooler.supabase.com:6543/postgres?sslmode=require"
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


# DATABASE_URL's libpq parameters (CONTRACT §4) ---------------------------------------------------


def connect_target(monkeypatch: pytest.MonkeyPatch, query: str) -> database_url.ConnectTarget:
    settings = load(monkeypatch, DATABASE_URL=f"postgresql://app:pw-9f3c1@db.example.com:5432/app?{query}")
    return database_url.parse(settings.async_database_url() or "")


def test_libpq_parameters_become_asyncpg_s_connect_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    target = connect_target(
        monkeypatch,
        "sslmode=verify-full&connect_timeout=7&application_name=flavor%20prod"
        "&options=-c%20statement_timeout%3D5000%20-c%20lock_timeout=2s&pgbouncer=true",
    )
    assert target.url == "postgresql+asyncpg://app:pw-9f3c1@db.example.com:5432/app"  # nothing left for asyncpg
    assert (target.ssl, target.connect_timeout_seconds, target.application_name) == ("verify-full", 7, "flavor prod")
    assert target.server_settings == {"statement_timeout": "5000", "lock_timeout": "2s"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sslmode=require", {"ssl": "require"}),
        ("sslmode=DISABLE", {"ssl": "disable"}),
        ("ssl=require", {"ssl": "require"}),  # asyncpg's own spelling, which worked before
        ("pgbouncer=true", {}),
        ("pgbouncer=false", {}),
        ("application_name=", {"application_name": None}),
        ("fallback_application_name=billing", {"application_name": "billing"}),
        ("application_name=a&fallback_application_name=b", {"application_name": "a"}),
        ("options=-c%20application_name%3Dfrom-options", {"application_name": "from-options"}),
        ("options=-cstatement_timeout=1s", {"server_settings": {"statement_timeout": "1s"}}),
        ("options=--statement-timeout=1s", {"server_settings": {"statement_timeout": "1s"}}),
        ("options=-c%20search_path=a\\%20b", {"server_settings": {"search_path": "a b"}}),  # backslash escapes
        ("options=-c%20timezone=Etc/GMT+5", {"server_settings": {"timezone": "Etc/GMT+5"}}),  # a + stays a +
        ("options=", {"server_settings": {}}),
        ("target_session_attrs=read-write", {"connect_args": {"target_session_attrs": "read-write"}}),
        ("dbname=other", {"connect_args": {"database": "other"}}),
    ],
)
def test_each_libpq_parameter_is_honoured(
    monkeypatch: pytest.MonkeyPatch, query: str, expected: dict[str, object]
) -> None:
    target = connect_target(monkeypatch, query)
    for name, value in expected.items():
        assert getattr(target, name) == value, name


def test_host_and_port_in_the_query_stay_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch, DATABASE_URL="postgresql://postgres@/app?host=/run/postgresql&port=5433&sslmode=disable"
    )
    target = database_url.parse(settings.async_database_url() or "")
    url = make_url(target.url)
    assert dict(url.query) == {"host": "/run/postgresql", "port": "5433"}  # SQLAlchemy's dialect reads these
    assert target.ssl == "disable"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("keepalives=1", "'keepalives'"),
        ("connect_timout=10", "'connect_timout' is not supported (did you mean 'connect_timeout'?"),
        ("statement_cache_size=100", "'statement_cache_size'"),  # the engine's pooler safety is not negotiable
        ("sslmode=bogus", "'sslmode'"),
        ("sslmode=require&ssl=require", "sslmode or ssl"),
        ("connect_timeout=abc", "'connect_timeout'"),
        ("connect_timeout=0", "'connect_timeout'"),  # libpq's "wait forever"
        ("connect_timeout=-5", "'connect_timeout'"),
        ("connect_timeout=2.5", "'connect_timeout'"),
        ("pgbouncer=maybe", "'pgbouncer'"),
        ("options=-d%205", "'options'"),
        ("options=statement_timeout%3D5", "'options'"),
        ("options=-c%20statement_timeout", "'options'"),
        ("options=-c", "'options'"),
        ("target_session_attrs=whatever", "'target_session_attrs'"),
        ("sslrootcert=/etc/ca.pem", "PGSSLROOTCERT"),
        ("application_name=a&application_name=b", "'application_name' is given twice"),
    ],
)
def test_a_parameter_that_cannot_be_honoured_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, query: str, named: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load(monkeypatch, DATABASE_URL=f"postgresql://app:pw-9f3c1@db.example.com/app?{query}")
    message = str(refused.value)
    assert "DATABASE_URL" in message
    assert named in message
    assert "pw-9f3c1" not in message
    assert "Traceback" not in message


def test_a_password_in_the_query_is_a_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, DATABASE_URL="postgresql://app@db.example.com/app?password=qry-S3cret-pw")
    assert "qry-S3cret-pw" in settings.secret_values()
