"""Where settings come from besides one variable per field: SCHEDULE_<JOB> and HEARTBEAT_URL_<JOB>
gathered into one field each (the jobs are the catalog's, so the model needs no field per job), and
the secrets read from the file a `<NAME>_FILE` variable names (Docker secrets, systemd credentials)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from scheduler.settings_values import HEARTBEAT_PREFIX, SCHEDULE_PREFIX

# The settings that hold a secret; each may instead be read from the file `<NAME>_FILE` names.
SECRET_NAMES = ("database_url", "twilio_auth_token", "resend_api_key", "cron_secret", "resend_webhook_secret")


class ScheduleVariables(PydanticBaseSettingsSource):
    """SCHEDULE_<JOB> variables (the environment over `.env`) gathered into `schedules`: the jobs
    are the catalog's, so the settings need no field per job."""

    prefix = SCHEDULE_PREFIX
    field = "schedules"

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._sources = [source for source in sources if isinstance(source, EnvSettingsSource)]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # this source fills `schedules` as a whole, in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for source in reversed(self._sources):  # lowest priority first: the environment wins
            for name, value in source.env_vars.items():
                if name.lower().startswith(self.prefix) and value:
                    found[name.lower().removeprefix(self.prefix)] = value
        return {self.field: found} if found else {}


class HeartbeatVariables(ScheduleVariables):
    """HEARTBEAT_URL_<JOB> variables gathered into `heartbeats`, as the schedules are."""

    prefix = HEARTBEAT_PREFIX
    field = "heartbeats"


def fold_schedule_keywords(data: Any, prefix: str = SCHEDULE_PREFIX, into: str = "schedules") -> Any:
    """`Settings(schedule_<job>=...)` keywords, gathered as the environment variables are."""
    if isinstance(data, dict):
        given = {key: value for key, value in data.items() if str(key).lower().startswith(prefix)}
        if given:
            data = {key: value for key, value in data.items() if key not in given}
            named = {str(key).lower().removeprefix(prefix): value for key, value in given.items()}
            data[into] = {**data.get(into, {}), **named}
    return data


def secrets_from_files(settings: object) -> dict[str, str]:
    """The secrets whose `<NAME>_FILE` is set, read from their files, by setting name; a secret
    given both ways is refused."""
    found = {}
    for name in SECRET_NAMES:
        path: Path | None = getattr(settings, f"{name}_file")
        if path is None:
            continue
        if getattr(settings, name) is not None:
            raise ValueError(f"{name.upper()} and {name.upper()}_FILE are both set; set one")
        found[name] = read_secret_file(f"{name.upper()}_FILE", path)
    return found


def read_secret_file(variable: str, path: Path) -> str:
    """The secret a `<NAME>_FILE` variable points to (Docker secrets, systemd credentials)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{variable}: {path} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"{variable}: {path} is empty")
    return text
