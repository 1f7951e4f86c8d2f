"""Every setting of the daemon (environment variables and `.env`), typed and validated at start:
one field each, its validator beside it (the longer checks are in settings_checks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from scheduler import settings_checks as checks
from scheduler.database_url import check_url
from scheduler.settings_derived import DerivedSettings
from scheduler.settings_sources import HeartbeatVariables, ScheduleVariables, fold_schedule_keywords, secrets_from_files
from scheduler.settings_values import (
    CENTURY_DAYS,
    HEARTBEAT_PREFIX,
    SCHEDULE_PREFIX,
    Days,
    Hours,
    SendRate,
    check_heartbeats,
    check_schedules,
    email_address,
    host_name,
    http_url,
)
from scheduler.vocabulary import JobName


class SettingsError(Exception):
    """Settings that cannot be used; the message names each offending variable."""


class Settings(BaseSettings, DerivedSettings):
    """The daemon's configuration (CONTRACT §4). Built once, at start, by the CLI. The values
    worked out from it (zone, channels enabled, secrets to mask) are its base `DerivedSettings`."""

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

    # SCHEDULE_<JOB>: the cron expressions that replace a job's default (see settings_sources.ScheduleVariables).
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
    # HEARTBEAT_URL_<JOB>: pinged at the start and end of each run (see settings_sources.HeartbeatVariables).
    heartbeats: dict[str, str] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return checks.known_timezone(value)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_window(cls, value: str) -> str:
        return checks.quiet_window(value)

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
        return checks.sms_sender(value)

    @field_validator("resend_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return checks.webhook_secret(value)

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
        return checks.sender_number(value)

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
        for name, text in secrets_from_files(self).items():
            secret = SecretStr(text)
            if name == "resend_webhook_secret":  # the one secret with a form of its own, checked as if given inline
                try:
                    secret = checks.webhook_secret(secret) or secret
                except ValueError as exc:
                    raise ValueError(f"RESEND_WEBHOOK_SECRET_FILE: {exc}") from None
            setattr(self, name, secret)
        return self

    @model_validator(mode="after")
    def _database_url_scheme(self) -> Settings:
        if self.database_url is not None:
            check_url(self.database_url.get_secret_value())
        return self

    @model_validator(mode="after")
    def _reminders_can_happen(self) -> Settings:
        checks.reminders_can_happen(
            self.reminder_min_lead_minutes, self.booking_reminder_hours, self.payment_reminder_days
        )
        return self

    @model_validator(mode="after")
    def _message_text_kept_within_history(self) -> Settings:
        checks.message_text_kept_within_history(self.message_retention_days, self.run_history_retention_days)
        return self

    @model_validator(mode="after")
    def _whatsapp_complete(self) -> Settings:
        checks.whatsapp_complete(self.twilio_account_sid, self.twilio_auth_token, self.twilio_whatsapp_number)
        return self

    @model_validator(mode="after")
    def _sms_needs_twilio(self) -> Settings:
        checks.sms_needs_whatsapp(self.twilio_sms_from, self.whatsapp_enabled)
        return self


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
