"""pytest fixtures for the stand-in provider servers; conftest.py imports them with `import *`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from scheduler.settings import Settings
from tests.fakes.providers import FakeResend, FakeTwilio

TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_AUTH_TOKEN = "twilio-test-token-0123456789"
TWILIO_WHATSAPP_NUMBER = "+14155238886"  # Twilio's WhatsApp sandbox sender
RESEND_API_KEY = "re_test_0123456789abcdef"
EMAIL_FROM = "bookings@flavorentertainers.com.au"


def stand_in_twilio(**options: Any) -> FakeTwilio:
    """A FakeTwilio (to start with `async with`) that accepts TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN;
    `options` are FakeTwilio's (latency_seconds, now, ...)."""
    return FakeTwilio(
        account_sid=TWILIO_ACCOUNT_SID,
        auth_token=TWILIO_AUTH_TOKEN,
        whatsapp_number=f"whatsapp:{TWILIO_WHATSAPP_NUMBER}",
        **options,
    )


def whatsapp_settings(database_url: str, twilio: FakeTwilio, **overrides: Any) -> Settings:
    """Settings for an app on `database_url` that sends WhatsApp through `twilio` (email off), at any
    hour, with its HTTP server on any free port."""
    from tests.database import to_libpq

    values: dict[str, Any] = {
        "database_url": to_libpq(database_url),
        "twilio_account_sid": TWILIO_ACCOUNT_SID,
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "twilio_whatsapp_number": TWILIO_WHATSAPP_NUMBER,
        "twilio_api_base_url": twilio.url,
        "quiet_hours": "off",
        "http_port": 0,
    }
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.fixture
async def twilio_server() -> AsyncIterator[FakeTwilio]:
    """A started FakeTwilio that accepts TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN."""
    async with stand_in_twilio() as server:
        yield server


@pytest.fixture
async def resend_server() -> AsyncIterator[FakeResend]:
    """A started FakeResend that accepts RESEND_API_KEY, with the EMAIL_FROM domain verified."""
    async with FakeResend(api_key=RESEND_API_KEY) as server:
        yield server


@pytest.fixture
def provider_settings(twilio_server: FakeTwilio, resend_server: FakeResend) -> Settings:
    """Settings with both channels on, pointed at the two stand-in servers (no database)."""
    return Settings(
        _env_file=None,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_whatsapp_number=TWILIO_WHATSAPP_NUMBER,
        twilio_api_base_url=twilio_server.url,
        resend_api_key=RESEND_API_KEY,
        resend_api_url=resend_server.url,
        email_from=EMAIL_FROM,
        quiet_hours="off",
    )


__all__ = [
    "EMAIL_FROM",
    "RESEND_API_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WHATSAPP_NUMBER",
    "provider_settings",
    "resend_server",
    "twilio_server",
]
