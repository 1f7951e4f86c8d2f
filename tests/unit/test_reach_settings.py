"""The settings of SMS fallback, Resend's webhook and heartbeats (CONTRACT §4):
gathered, checked, and refused by name when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.redact import mask_url
from scheduler.settings import SettingsError, load_settings
from scheduler.vocabulary import JobName

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(_env_file=None)
    assert settings.twilio_sms_from is None and not settings.sms_fallback_enabled
    assert settings.sms_max_per_second == 1
    assert settings.resend_webhook_secret is None
    assert settings.email_batch_size == 100
    assert all(settings.heartbeat_url(job) is None for job in JobName)


def test_heartbeat_urls_are_gathered_per_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEARTBEAT_URL_SEND_BOOKING_REMINDERS", "https://hc-ping.com/abc-123/")
    (tmp_path / ".env").write_text("HEARTBEAT_URL_CLEANUP_EXPIRED_OTPS=https://hc-ping.com/def-456\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.heartbeat_url(JobName.SEND_BOOKING_REMINDERS) == "https://hc-ping.com/abc-123"
    assert settings.heartbeat_url(JobName.CLEANUP_EXPIRED_OTPS) == "https://hc-ping.com/def-456"
    assert settings.heartbeat_url(JobName.DELIVER_PENDING_MESSAGES) is None
    # A ping URL is a credential: the log processor strips it like any secret.
    assert "https://hc-ping.com/abc-123" in settings.secret_values()


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("HEARTBEAT_URL_SEND_BOOKING_REMINDER", "HEARTBEAT_URL_SEND_BOOKING_REMINDERS"),
        ("HEARTBEAT_CLEANUP_EXPIRED_OTPS", "HEARTBEAT_URL_CLEANUP_EXPIRED_OTPS"),
        ("RESEND_WEBHOOK_SECRT", "RESEND_WEBHOOK_SECRET"),
        ("TWILIO_SMS_FORM", "TWILIO_SMS_FROM"),
        ("EMAIL_BATCHSIZE", "EMAIL_BATCH_SIZE"),
    ],
)
def test_lookalikes_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, closest: str) -> None:
    monkeypatch.setenv(variable, "https://hc-ping.com/abc")
    with pytest.raises(SettingsError, match=rf"{variable} is not a setting .*did you mean {closest}\?"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "HEARTBEAT_URL_CLEANUP_EXPIRED_OTPS",
            "hc-ping.com/abc",
            "HEARTBEAT_URL_CLEANUP_EXPIRED_OTPS: must be an http",
        ),
        ("TWILIO_SMS_FROM", "not a number", "TWILIO_SMS_FROM: "),
        ("TWILIO_SMS_FROM", "MG123", "TWILIO_SMS_FROM: a Messaging Service SID is MG followed by 32"),
        ("TWILIO_SMS_FROM", "+61480000000", "TWILIO_SMS_FROM is the fallback for WhatsApp"),
        ("SMS_MAX_PER_SECOND", "0", "SMS_MAX_PER_SECOND: "),
        ("EMAIL_BATCH_SIZE", "0", "EMAIL_BATCH_SIZE: "),
        ("EMAIL_BATCH_SIZE", "101", "EMAIL_BATCH_SIZE: "),
        ("RESEND_WEBHOOK_SECRET", "whsec_not base64!", "RESEND_WEBHOOK_SECRET: must be Resend's signing secret"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert expected in str(raised.value)
    if variable == "RESEND_WEBHOOK_SECRET":
        assert value not in str(raised.value)


def test_sms_sender_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("TWILIO_ACCOUNT_SID", "AC" + "0" * 32), ("TWILIO_AUTH_TOKEN", "token-0123456789"),
                        ("TWILIO_WHATSAPP_NUMBER", "+14155238886")):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TWILIO_SMS_FROM", "0412 345 678")
    settings = load_settings(_env_file=None)
    assert settings.twilio_sms_from == "+61412345678" and settings.sms_fallback_enabled
    service = "MG" + "0123456789abcdef" * 2
    monkeypatch.setenv("TWILIO_SMS_FROM", service)
    assert load_settings(_env_file=None).twilio_sms_from == service


def test_webhook_secret_is_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "resend_webhook_secret"
    path.write_text(WEBHOOK_SECRET + "\n")
    monkeypatch.setenv("RESEND_WEBHOOK_SECRET_FILE", str(path))
    settings = load_settings(_env_file=None)
    assert settings.resend_webhook_secret is not None
    assert settings.resend_webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert WEBHOOK_SECRET in settings.secret_values()
    assert WEBHOOK_SECRET not in repr(settings)


def test_a_webhook_secret_file_is_checked_like_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "resend_webhook_secret"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    monkeypatch.setenv("RESEND_WEBHOOK_SECRET_FILE", str(path))
    with pytest.raises(SettingsError, match="RESEND_WEBHOOK_SECRET_FILE") as refused:
        load_settings(_env_file=None)
    assert "root:x" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hc-ping.com/5f1c2b7e-9d0a-4c61", "https://hc-ping.com/***"),
        ("https://hc-ping.com/ping-key/my-check/fail", "https://hc-ping.com/***"),
        ("http://user:pw@monitor.example:8080/x?token=y", "http://monitor.example:8080/***"),
        ("https://monitor.example", "https://monitor.example"),
    ],
)
def test_ping_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
