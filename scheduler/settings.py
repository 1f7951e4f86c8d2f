"""Every setting of the daemon (environment variables and `.env`), typed and validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from scheduler.database_url import ASYNCPG_SCHEME, check_url
from scheduler.quiet_hours import QuietHours, QuietHoursError
from scheduler.settings_values import (
    CENTURY_DAYS,
    HEARTBEAT_PREFIX,
    SCHEDULE_PREFIX,
    Days,
    HeartbeatVariables,
    Hours,
    ScheduleVariables,
    SendRate,
    check_heartbeats,
    check_schedules,
    email_address,
    fold_schedule_keywords,
    host_name,
    http_url,
    read_secret_file,
)
from scheduler.vocabulary import JobName

SECRET_NAMES = ("database_url", "twilio_auth_token", "resend_api_key", "cron_secret", "resend_webhook_secret")


class SettingsError(Exception):
    """Settings that cannot be used; the message names each offending variable."""


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
        schedules = ScheduleVariables(settings_cls, env_settings, dotenv_settings)
        heartbeats = HeartbeatVariables(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, schedules, heartbeats, file_secret_settings

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
    reminder_min_lead_minutes: Annotated[int, Field(ge=0, le=CENTURY_DAYS * 24 * 60)] = 60
    delete_batch_size: Annotated[int, Field(gt=0, le=1_000_000)] = 5000

    # The daemon's own data (cleanup_scheduler_history): run history and settled messages are
    # deleted after RUN_HISTORY_RETENTION_DAYS; a settled message's address and text go earlier.
    run_history_retention_days: Days = 90
    message_retention_days: Days = 30

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
    quiet_hours: str = "21:00-08:00"  # local HH:MM-HH:MM in TIMEZONE when WhatsApp and email wait; off
    whatsapp_max_per_second: SendRate = 10
    email_max_per_second: SendRate = 2

    cron_secret: SecretStr | None = None
    cron_secret_file: Path | None = None

    http_host: str = "0.0.0.0"  # noqa: S104 - a daemon's metrics port is meant to be scraped
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9464

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None  # None: console on a terminal, else json

    shutdown_timeout_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30

    # Reaching people: SMS fallback, Resend's webhook, dead-man's-switch pings.
    twilio_sms_from: str | None = None  # +E164 or a Messaging Service SID (MG…); unset: no SMS fallback
    # A long code sends about 1 SMS a second (Twilio queues the rest); a Messaging Service of several numbers more.
    sms_max_per_second: SendRate = 1
    resend_webhook_secret: SecretStr | None = None  # whsec_…; unset: /api/resend/webhook answers 404
    resend_webhook_secret_file: Path | None = None
    email_batch_size: Annotated[int, Field(ge=1, le=100)] = 100  # Resend's /emails/batch takes at most 100
    # HEARTBEAT_URL_<JOB>: pinged at the start and end of each run (see HeartbeatVariables).
    heartbeats: dict[str, str] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Australia/Perth)") from exc
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_window(cls, value: str) -> str:
        try:
            window = QuietHours.parse(value)
        except QuietHoursError as exc:
            raise ValueError(str(exc)) from None
        return str(window) if window is not None else "off"

    @model_validator(mode="before")
    @classmethod
    def _schedule_keywords(cls, data: Any) -> Any:
        return fold_schedule_keywords(fold_schedule_keywords(data), HEARTBEAT_PREFIX, "heartbeats")

    @field_validator("heartbeats")
    @classmethod
    def _known_jobs_and_urls(cls, value: dict[str, str]) -> dict[str, str]:
        return check_heartbeats(value)

    @field_validator("twilio_sms_from")
    @classmethod
    def _sms_sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.startswith("MG"):
            if len(value) != 34 or not all(ch in "0123456789abcdefABCDEF" for ch in value[2:]):
                raise ValueError("a Messaging Service SID is MG followed by 32 hexadecimal digits")
            return value
        from scheduler.phones import InvalidPhoneNumber, to_e164

        try:
            return to_e164(value)
        except InvalidPhoneNumber as exc:
            raise ValueError(
                f"{exc}; write a number in international form (+61…) or a Messaging Service SID (MG…)"
            ) from None

    @field_validator("resend_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        import base64
        import binascii

        try:
            base64.b64decode(value.get_secret_value().strip().removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be Resend's signing secret, whsec_ followed by base64") from None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("schedules")
    @classmethod
    def _known_jobs_cron_or_off(cls, value: dict[str, str]) -> dict[str, str]:
        return check_schedules(value)

    @field_validator("audit_log_keep_event_types", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("twilio_api_base_url", "resend_api_url", "twilio_status_callback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("email_from", "email_reply_to")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return email_address(value)

    @field_validator("http_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return host_name(value)

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
            text = read_secret_file(f"{name.upper()}_FILE", path)
            setattr(self, name, SecretStr(text))
        return self

    @model_validator(mode="after")
    def _database_url_scheme(self) -> Settings:
        if self.database_url is not None:
            check_url(self.database_url.get_secret_value())
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
    def _message_text_kept_within_history(self) -> Settings:
        # Messages are deleted after RUN_HISTORY_RETENTION_DAYS: a longer text retention would be a promise not kept.
        if self.message_retention_days > self.run_history_retention_days:
            raise ValueError(
                f"MESSAGE_RETENTION_DAYS ({self.message_retention_days}) must not exceed "
                f"RUN_HISTORY_RETENTION_DAYS ({self.run_history_retention_days}): messages are deleted after that"
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

    @model_validator(mode="after")
    def _sms_needs_twilio(self) -> Settings:
        if self.twilio_sms_from is not None and not self.whatsapp_enabled:
            raise ValueError(
                "TWILIO_SMS_FROM is the fallback for WhatsApp: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN "
                "and TWILIO_WHATSAPP_NUMBER too"
            )
        return self

    # Derived values -------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def quiet(self) -> QuietHours | None:
        """QUIET_HOURS as a window, None when `off`."""
        return QuietHours.parse(self.quiet_hours)

    def heartbeat_url(self, job: JobName) -> str | None:
        """HEARTBEAT_URL_<JOB> when set: the dead-man's-switch URL pinged around the job's runs."""
        return self.heartbeats.get(job.value)

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
        return f"{ASYNCPG_SCHEME}://{rest}"

    @property
    def whatsapp_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_number)

    @property
    def sms_fallback_enabled(self) -> bool:
        """WhatsApp messages that fail for good are sent once as an SMS (TWILIO_SMS_FROM)."""
        return self.whatsapp_enabled and self.twilio_sms_from is not None

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
            for secret in (self.twilio_auth_token, self.resend_api_key, self.cron_secret, self.resend_webhook_secret)
            if secret is not None
        ]
        values += self.heartbeats.values()  # a ping URL is a credential: whoever has it can ping
        if self.database_url is not None:
            from scheduler import database_url

            try:
                url = database_url.url_parts(database_url.parse(self.async_database_url() or "").url)
                password = url.password or url.query.get("password")  # libpq also takes ?password=
            except Exception:
                password = None
            if password:
                values.append(str(password))
        return [value for value in values if len(value) >= 4]


def variable_names() -> list[str]:
    """Every environment variable the daemon reads, SCHEDULE_<JOB> for each job included."""
    names = [name.upper() for name in Settings.model_fields if name not in ("schedules", "heartbeats")]
    per_job = (SCHEDULE_PREFIX, HEARTBEAT_PREFIX)
    return names + [f"{prefix.upper()}{job.value.upper()}" for prefix in per_job for job in JobName]


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, raising SettingsError with one line per bad variable."""
    from scheduler.settings_typos import describe, given_variables, lookalikes

    found = lookalikes(given_variables(overrides.get("_env_file", ".env")))
    if found:
        raise SettingsError(describe(found))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            # The per-job variables' messages name their variable themselves.
            if error["loc"] and error["loc"][0] not in ("schedules", "heartbeats"):
                lines.append(f"{str(error['loc'][0]).upper()}: {message}")
            else:
                lines.append(message)
        raise SettingsError("; ".join(lines)) from None
