"""The kinds of value the settings take, and their checks: bounded durations and rates, URLs,
addresses, host names, and the jobs and values of SCHEDULE_<JOB> and HEARTBEAT_URL_<JOB>."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
import unicodedata
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field

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
