"""The checks behind the Settings validators that are more than a call: a value that must parse
(time zone, quiet hours, senders, the webhook secret) and the settings that only make sense together.
Each raises ValueError with the message the operator sees."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from scheduler.quiet_hours import QuietHours, QuietHoursError


def known_timezone(value: str) -> str:
    """TIMEZONE: an IANA name."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Australia/Perth)") from exc
    return value


def quiet_window(value: str) -> str:
    """QUIET_HOURS: HH:MM-HH:MM or `off`, written back in its normal form."""
    try:
        window = QuietHours.parse(value)
    except QuietHoursError as exc:
        raise ValueError(str(exc)) from None
    return str(window) if window is not None else "off"


def sms_sender(value: str | None) -> str | None:
    """TWILIO_SMS_FROM: a number in E.164 or a Messaging Service SID."""
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


def webhook_secret(value: SecretStr | None) -> SecretStr | None:
    """RESEND_WEBHOOK_SECRET: whsec_ and base64, as Resend shows it."""
    if value is None:
        return None
    import base64
    import binascii

    try:
        base64.b64decode(value.get_secret_value().strip().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be Resend's signing secret, whsec_ followed by base64") from None
    return SecretStr(value.get_secret_value().strip())


def sender_number(value: str | None) -> str | None:
    """TWILIO_WHATSAPP_NUMBER: a number in E.164."""
    if value is None:
        return None
    from scheduler.phones import InvalidPhoneNumber, to_e164  # phonenumbers is slow to import

    try:
        return to_e164(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"{exc}; write it in international form, e.g. +14155238886") from None


def reminders_can_happen(lead_minutes: int, booking_reminder_hours: int, payment_reminder_days: int) -> None:
    """A lead as long as a reminder's horizon leaves no moment at which a booking is due."""
    lead_hours = lead_minutes / 60
    for variable, horizon_hours in (
        ("BOOKING_REMINDER_HOURS", booking_reminder_hours),
        ("PAYMENT_REMINDER_DAYS", payment_reminder_days * 24),
    ):
        if lead_hours >= horizon_hours:
            raise ValueError(
                f"REMINDER_MIN_LEAD_MINUTES ({lead_minutes}) must be shorter than "
                f"{variable} ({horizon_hours:g} hours), or no reminder is ever due"
            )


def message_text_kept_within_history(message_retention_days: int, run_history_retention_days: int) -> None:
    """Messages are deleted after RUN_HISTORY_RETENTION_DAYS: a longer text retention would be a promise not kept."""
    if message_retention_days > run_history_retention_days:
        raise ValueError(
            f"MESSAGE_RETENTION_DAYS ({message_retention_days}) must not exceed "
            f"RUN_HISTORY_RETENTION_DAYS ({run_history_retention_days}): messages are deleted after that"
        )


def whatsapp_complete(account_sid: str | None, auth_token: SecretStr | None, whatsapp_number: str | None) -> None:
    """The three Twilio settings WhatsApp needs: all or none."""
    given = [account_sid, auth_token, whatsapp_number]
    if any(given) and not all(given):
        missing = [
            name
            for name, value in zip(
                ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_NUMBER"), given, strict=True
            )
            if not value
        ]
        raise ValueError(f"WhatsApp is half configured: {', '.join(missing)} missing")


def sms_needs_whatsapp(sms_from: str | None, whatsapp_enabled: bool) -> None:
    """TWILIO_SMS_FROM is WhatsApp's fallback, sent with its Twilio account."""
    if sms_from is not None and not whatsapp_enabled:
        raise ValueError(
            "TWILIO_SMS_FROM is the fallback for WhatsApp: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN "
            "and TWILIO_WHATSAPP_NUMBER too"
        )
