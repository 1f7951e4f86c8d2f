"""Every setting of the daemon (environment variables and `.env`), typed and validated at start."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
import unicodedata
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from scheduler import cron
from scheduler.vocabulary import JobName

SCHEDULE_PREFIX = "schedule_"  # SCHEDULE_<JOB>, case-insensitive like every variable
SECRET_NAMES = ("database_url", "twilio_auth_token", "resend_api_key", "cron_secret")
_ASYNCPG_SCHEME = "postgresql+asyncpg"

# Durations the jobs step back or forward from now: at most a century, which no rule needs and
# which keeps the date arithmetic in range (a larger value crashed every run with OverflowError).
_CENTURY_DAYS = 36_500
Hours = Annotated[int, Field(gt=0, le=_CENTURY_DAYS * 24)]
Days = Annotated[int, Field(gt=0, le=_CENTURY_DAYS)]
# A send ceiling: a finite number, and not so slow that the smallest claim of messages (10)
# outlasts the delivery lease (120 s); below one message every two seconds it would.
SendRate = Annotated[float, Field(ge=0.5, allow_inf_nan=False)]
_EMAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")


def _has_control_or_space(value: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value)


class SettingsError(Exception):
    """Settings that cannot be used; the message names each offending variable."""


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or _has_control_or_space(value):
        raise ValueError("must be an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    return value.rstrip("/")


def _email_address(value: str | None) -> str | None:
    """An address, or `Name <address>` as Resend accepts; no line breaks (header injection)."""
    if value is None:
        return None
    if any(unicodedata.category(ch).startswith("C") for ch in value) or not _EMAIL_ADDRESS.fullmatch(
        parseaddr(value)[1]
    ):
        raise ValueError("must be an email address such as bookings@example.com or Name <bookings@example.com>")
    return value


class _ScheduleVariables(PydanticBaseSettingsSource):
    """SCHEDULE_<JOB> variables (the environment over `.env`) gathered into `schedules`: the jobs
    are the catalog's, so the settings need no field per job."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._sources = [source for source in sources if isinstance(source, EnvSettingsSource)]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # this source fills `schedules` as a whole, in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for source in reversed(self._sources):  # lowest priority first: the environment wins
            for name, value in source.env_vars.items():
                if name.lower().startswith(SCHEDULE_PREFIX) and value:
                    found[name.lower().removeprefix(SCHEDULE_PREFIX)] = value
        return {"schedules": found} if found else {}


class Settings(BaseSettings):
    """The daemon's configuration (CONTRACT §4). Built once, at start, by the CLI."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        schedules = _ScheduleVariables(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, schedules, file_secret_settings

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    database_url: SecretStr | None = None
    database_url_file: Path | None = None
    database_pool_size: PositiveInt = 5

    timezone: str = "Australia/Perth"

    # SCHEDULE_<JOB>: the cron expressions that replace a job's default (see _ScheduleVariables).
    schedules: dict[str, str] = Field(default_factory=dict)

    stale_booking_hours: Hours = 24
    notification_retention_days: Days = 30
    audit_log_retention_days: Days = 90
    audit_log_keep_event_types: Annotated[tuple[str, ...], NoDecode] = ("security", "fraud", "dispute")
    booking_reminder_hours: Hours = 24
    payment_reminder_days: Days = 3
    reminder_min_lead_minutes: Annotated[int, Field(ge=0, le=_CENTURY_DAYS * 24 * 60)] = 60
    delete_batch_size: Annotated[int, Field(gt=0, le=1_000_000)] = 5000

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_auth_token_file: Path | None = None
    twilio_whatsapp_number: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_content_sid_booking_reminder: str | None = None
    twilio_content_sid_payment_reminder: str | None = None
    twilio_content_sid_booking_cancelled: str | None = None
    twilio_status_callback_url: str | None = None

    resend_api_key: SecretStr | None = None
    resend_api_key_file: Path | None = None
    email_from: str = "bookings@flavorentertainers.com.au"
    email_reply_to: str | None = None
    resend_api_url: str = "https://api.resend.com"

    message_max_retry_hours: Hours = 24  # a message failing transiently for this long is failed
    whatsapp_max_per_second: SendRate = 10
    email_max_per_second: SendRate = 2

    cron_secret: SecretStr | None = None
    cron_secret_file: Path | None = None

    http_host: str = "0.0.0.0"  # noqa: S104 - a daemon's metrics port is meant to be scraped
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9464

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None  # None: console on a terminal, else json

    shutdown_timeout_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Australia/Perth)") from exc
        return value

    @model_validator(mode="before")
    @classmethod
    def _schedule_keywords(cls, data: Any) -> Any:
        """`Settings(schedule_<job>=...)` keywords, as the environment variables are gathered."""
        if isinstance(data, dict):
            given = {key: value for key, value in data.items() if str(key).lower().startswith(SCHEDULE_PREFIX)}
            if given:
                data = {key: value for key, value in data.items() if key not in given}
                named = {str(key).lower().removeprefix(SCHEDULE_PREFIX): value for key, value in given.items()}
                data["schedules"] = {**data.get("schedules", {}), **named}
        return data

    @field_validator("schedules")
    @classmethod
    def _known_jobs_cron_or_off(cls, value: dict[str, str]) -> dict[str, str]:
        problems, schedules = [], {}
        names = [job.value for job in JobName]
        for key, expression in value.items():
            job = key.lower()
            variable = f"SCHEDULE_{job.upper()}"
            if job not in names:
                close = difflib.get_close_matches(job, names, n=1)
                hint = f"; did you mean SCHEDULE_{close[0].upper()}?" if close else ""
                problems.append(f"{variable} names no job{hint}")
                continue
            try:
                schedules[job] = cron.validate(expression)
            except cron.CronError as exc:
                problems.append(f"{variable}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return schedules

    @field_validator("audit_log_keep_event_types", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("twilio_api_base_url", "resend_api_url", "twilio_status_callback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("email_from", "email_reply_to")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return _email_address(value)

    @field_validator("http_host")
    @classmethod
    def _host(cls, value: str) -> str:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(value)
            return value
        if len(value) > 253 or not _HOSTNAME.fullmatch(value):
            raise ValueError("must be an IP address (0.0.0.0, ::, 127.0.0.1) or a host name")
        return value

    @field_validator("twilio_whatsapp_number")
    @classmethod
    def _sender_number(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from scheduler.phones import InvalidPhoneNumber, to_e164  # phonenumbers is slow to import

        try:
            return to_e164(value)
        except InvalidPhoneNumber as exc:
            raise ValueError(f"{exc}; write it in international form, e.g. +14155238886") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        for name in SECRET_NAMES:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"{name.upper()} and {name.upper()}_FILE are both set; set one")
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{name.upper()}_FILE: cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ValueError(f"{name.upper()}_FILE: {path} is not UTF-8 text") from None
            if not text:
                raise ValueError(f"{name.upper()}_FILE: {path} is empty")
            setattr(self, name, SecretStr(text))
        return self

    @model_validator(mode="after")
    def _database_url_scheme(self) -> Settings:
        if self.database_url is not None:
            scheme = self.database_url.get_secret_value().partition("://")[0]
            if scheme not in ("postgresql", "postgres", _ASYNCPG_SCHEME):
                raise ValueError("DATABASE_URL must start with postgresql:// or postgresql+asyncpg://")
            from sqlalchemy.engine import make_url

            from scheduler import database_url

            # libpq's query parameters are translated or refused here, by name (exit 2), rather
            # than reaching asyncpg.connect() as keywords it does not know (a TypeError).
            target = database_url.parse(self.async_database_url() or "")
            try:
                port = make_url(target.url).port
            except (ValueError, TypeError):  # the parser's message would quote the URL, password and all
                port = 0
            if port is not None and not 0 < port < 65536:
                raise ValueError(
                    "DATABASE_URL is not a valid URL: check the port, and percent-encode special "
                    "characters in the user name and password"
                )
        return self

    @model_validator(mode="after")
    def _reminders_can_happen(self) -> Settings:
        # A lead as long as a reminder's horizon leaves no moment at which a booking is due.
        lead_hours = self.reminder_min_lead_minutes / 60
        for variable, horizon_hours in (
            ("BOOKING_REMINDER_HOURS", self.booking_reminder_hours),
            ("PAYMENT_REMINDER_DAYS", self.payment_reminder_days * 24),
        ):
            if lead_hours >= horizon_hours:
                raise ValueError(
                    f"REMINDER_MIN_LEAD_MINUTES ({self.reminder_min_lead_minutes}) must be shorter than "
                    f"{variable} ({horizon_hours:g} hours), or no reminder is ever due"
                )
        return self

    @model_validator(mode="after")
    def _whatsapp_complete(self) -> Settings:
        given = [self.twilio_account_sid, self.twilio_auth_token, self.twilio_whatsapp_number]
        if any(given) and not all(given):
            missing = [
                name
                for name, value in zip(
                    ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_NUMBER"), given, strict=True
                )
                if not value
            ]
            raise ValueError(f"WhatsApp is half configured: {', '.join(missing)} missing")
        return self

    # Derived values -------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def schedule_override(self, job: JobName) -> str | None:
        """SCHEDULE_<JOB> when set (a cron expression or 'off'); the job's default is the catalog's."""
        return self.schedules.get(job.value)

    def async_database_url(self) -> str | None:
        """DATABASE_URL with the asyncpg driver named, whatever scheme the operator wrote."""
        if self.database_url is None:
            return None
        url = self.database_url.get_secret_value()
        _, _, rest = url.partition("://")
        # The query stays as written: db.engine translates libpq's parameters for asyncpg.
        return f"{_ASYNCPG_SCHEME}://{rest}"

    @property
    def whatsapp_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_number)

    @property
    def email_enabled(self) -> bool:
        return self.resend_api_key is not None

    def content_sid(self, kind: str) -> str | None:
        """The approved WhatsApp template for a message kind, when one is configured."""
        value: str | None = getattr(self, f"twilio_content_sid_{kind}", None)
        return value

    def secret_values(self) -> list[str]:
        """Every secret in force, for the log processor that strips them from output."""
        values = [
            secret.get_secret_value()
            for secret in (self.twilio_auth_token, self.resend_api_key, self.cron_secret)
            if secret is not None
        ]
        if self.database_url is not None:
            from sqlalchemy.engine import make_url

            from scheduler import database_url

            try:
                url = make_url(database_url.parse(self.async_database_url() or "").url)
                password = url.password or url.query.get("password")  # libpq also takes ?password=
            except Exception:
                password = None
            if password:
                values.append(str(password))
        return [value for value in values if len(value) >= 4]


def variable_names() -> list[str]:
    """Every environment variable the daemon reads, SCHEDULE_<JOB> for each job included."""
    names = [name.upper() for name in Settings.model_fields if name != "schedules"]
    return names + [f"{SCHEDULE_PREFIX.upper()}{job.value.upper()}" for job in JobName]


def _variable_name(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]).upper() if loc else "settings"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, raising SettingsError with one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"] and error["loc"][0] != "schedules":  # those messages name their variable
                lines.append(f"{_variable_name(error['loc'])}: {message}")
            else:
                lines.append(message)
        raise SettingsError("; ".join(lines)) from None
