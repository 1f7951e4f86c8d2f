"""What the rest of the daemon reads off the settings rather than a variable as given: the zone,
the quiet window, a job's override and ping URL, the asyncpg URL, which channels are on, and the
secrets to strip from output. A base of `Settings`, so each is worked out in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from scheduler.database_url import ASYNCPG_SCHEME
from scheduler.quiet_hours import QuietHours
from scheduler.vocabulary import JobName

if TYPE_CHECKING:
    from pydantic import SecretStr


class DerivedSettings:
    """The values worked out from the fields of `Settings` (which declares them)."""

    if TYPE_CHECKING:
        database_url: SecretStr | None
        timezone: str
        schedules: dict[str, str]
        heartbeats: dict[str, str]
        quiet_hours: str
        twilio_account_sid: str | None
        twilio_auth_token: SecretStr | None
        twilio_whatsapp_number: str | None
        twilio_sms_from: str | None
        resend_api_key: SecretStr | None
        resend_webhook_secret: SecretStr | None
        cron_secret: SecretStr | None

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
