"""The kinds of value the settings take, and their checks: bounded durations and rates, URLs,
addresses, host names, and the SCHEDULE_<JOB> variables gathered from the environment."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from scheduler import cron
from scheduler.vocabulary import JobName

SCHEDULE_PREFIX = "schedule_"  # SCHEDULE_<JOB>, case-insensitive like every variable
HEARTBEAT_PREFIX = "heartbeat_url_"  # HEARTBEAT_URL_<JOB>

# Durations the jobs step back or forward from now: at most a century, which no rule needs and
# which keeps the date arithmetic in range (a larger value crashed every run with OverflowError).
CENTURY_DAYS = 36_500
Hours = Annotated[int, Field(gt=0, le=CENTURY_DAYS * 24)]
Days = Annotated[int, Field(gt=0, le=CENTURY_DAYS)]
# A send ceiling: a finite number, and not so slow that the smallest claim of messages (10)
# outlasts the delivery lease (120 s); below one message every two seconds it would.
SendRate = Annotated[float, Field(ge=0.5, allow_inf_nan=False)]
_EMAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")


def _has_control_or_space(value: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value)


def has_control_or_space(value: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value)


def http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or has_control_or_space(value):
        raise ValueError("must be an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    return value.rstrip("/")


def email_address(value: str | None) -> str | None:
    """An address, or `Name <address>` as Resend accepts; no line breaks (header injection)."""
    if value is None:
        return None
    from email.utils import parseaddr

    if any(unicodedata.category(ch).startswith("C") for ch in value) or not _EMAIL_ADDRESS.fullmatch(
        parseaddr(value)[1]
    ):
        raise ValueError("must be an email address such as bookings@example.com or Name <bookings@example.com>")
    return value


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


def check_schedules(value: dict[str, str]) -> dict[str, str]:
    """Each SCHEDULE_<JOB> names a job and holds a cron expression or `off`; the messages name the variable."""
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


def check_heartbeats(value: dict[str, str]) -> dict[str, str]:
    """Each HEARTBEAT_URL_<JOB> names a job and holds an http(s) URL; the messages name the variable."""
    problems, urls = [], {}
    names = [job.value for job in JobName]
    for key, url in value.items():
        job = key.lower()
        variable = f"{HEARTBEAT_PREFIX.upper()}{job.upper()}"
        if job not in names:
            close = difflib.get_close_matches(job, names, n=1)
            hint = f"; did you mean {HEARTBEAT_PREFIX.upper()}{close[0].upper()}?" if close else ""
            problems.append(f"{variable} names no job{hint}")
            continue
        try:
            urls[job] = http_url(url.strip()) or ""
        except ValueError as exc:
            problems.append(f"{variable}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return urls


def host_name(value: str) -> str:
    """HTTP_HOST: an IP address or a host name."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value)
        return value
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError("must be an IP address (0.0.0.0, ::, 127.0.0.1) or a host name")
    return value


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
