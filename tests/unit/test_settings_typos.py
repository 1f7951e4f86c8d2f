"""Look-alike variables stop the program naming the closest real name (CONTRACT §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.settings import Settings, SettingsError, load_settings
from scheduler.settings_typos import lookalikes, prefixes, setting_names
from scheduler.vocabulary import JobName


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("SCHEDULE_SEND_BOOKING_REMINDER", "SCHEDULE_SEND_BOOKING_REMINDERS"),
        ("SCHEDULE_CLEANUP", "SCHEDULE_CLEANUP_"),
        ("TWILIO_AUTH_TOKN", "TWILIO_AUTH_TOKEN"),
        ("RESEND_APIKEY", "RESEND_API_KEY"),
        ("log_levle", "LOG_LEVEL"),
    ],
)
def test_lookalike_is_refused_naming_the_real_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    monkeypatch.setenv(variable, "0 3 * * *")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert f"{variable.upper()} is not a setting" in message
    assert f"did you mean {closest}" in message


def test_lookalike_in_the_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SCHEDULE_SEND_PAYMENT_REMINDER=off\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=r"SCHEDULE_SEND_PAYMENT_REMINDER .*SCHEDULE_SEND_PAYMENT_REMINDERS"):
        load_settings()


@pytest.mark.parametrize(
    "variable",
    ["HTTP_PROXY", "http_proxy", "DATABASE_SERVICE_HOST", "EMAIL_PORT_25_TCP_ADDR", "PATH", "TEST_DATABASE_URL"],
)
def test_other_programs_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "x")
    load_settings(_env_file=None)


def test_real_names_come_from_the_settings_model() -> None:
    names = setting_names()
    fields = {field.upper() for field in Settings.model_fields} - {"SCHEDULES", "HEARTBEATS"}
    per_job = {f"{prefix}{job.value.upper()}" for prefix in ("SCHEDULE_", "HEARTBEAT_URL_") for job in JobName}
    assert names == fields | per_job
    assert {"SCHEDULE_", "HEARTBEAT_", "TWILIO_", "RESEND_", "DATABASE_", "TIMEZONE"} <= prefixes(names)
    assert lookalikes(names) == []
