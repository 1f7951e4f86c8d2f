"""When a WhatsApp message is sent again as an SMS (TWILIO_SMS_FROM), and when a number is
suppressed: Twilio's answers that say the recipient cannot be reached on WhatsApp, as opposed
to answers that say the number itself is wrong or has opted out of everything."""

from __future__ import annotations

# Refused at send: 63016 outside the 24-hour session (free text), 63003 not a WhatsApp number.
SMS_FALLBACK_CODES = frozenset({"63016", "63003"})
# Reported later as undelivered/failed: any reason but an invalid number (an SMS would fail too)
# or an opt-out (the recipient asked for nothing more).
NO_FALLBACK_CODES = frozenset({"21211", "21614", "21610"})
FAILED_STATUSES = frozenset({"undelivered", "failed"})
OPTED_OUT_CODE = "21610"  # the recipient replied STOP: the number is suppressed


def falls_back_on_refusal(code: str | None) -> bool:
    """Whether a WhatsApp send refused with this Twilio error code is owed as an SMS."""
    return code in SMS_FALLBACK_CODES


def falls_back_on_status(status: str, code: str | None) -> bool:
    """Whether a WhatsApp message Twilio later reports so is owed as an SMS."""
    return status in FAILED_STATUSES and code not in NO_FALLBACK_CODES
