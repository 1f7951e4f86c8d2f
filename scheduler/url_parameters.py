"""DATABASE_URL's query parameters as libpq users write them (`?sslmode=require&connect_timeout=10`),
each translated into what asyncpg takes, or refused with an error naming it.

SQLAlchemy hands every query parameter to `asyncpg.connect()` as a keyword, so libpq's own
crashed the first connection with a TypeError. The table of parameters and what each becomes
lives here, apart from the URL itself (`database_url.py`), so that one more parameter is one
handler and one line of `_HANDLERS`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
# Parameters SQLAlchemy's asyncpg dialect already understands in the query: a socket directory or
# several hosts (`?host=/run/postgresql`), and libpq's URI spellings of the URL's own parts.
_PASSED_THROUGH = ("host", "port", "user", "password")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# asyncpg reads these from the environment (as libpq does), not from keywords.
_FROM_ENVIRONMENT = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
}


class DatabaseUrlError(ValueError):
    """A DATABASE_URL parameter that cannot be honoured; the message names it, never the password."""


@dataclass(slots=True)
class Parameters:
    """What the query's parameters said, as `read_query` collects it."""

    passed: dict[str, str] = field(default_factory=dict)
    ssl: str | None = None
    connect_timeout: int | None = None
    application_name: str | None = None
    fallback_name: str | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    connect_args: dict[str, Any] = field(default_factory=dict)


def _ssl(found: Parameters, name: str, value: str) -> None:
    found.ssl = _one_of(name, value.lower(), SSL_MODES)


def _timeout(found: Parameters, _name: str, value: str) -> None:
    # libpq reads 0 or a negative number as "wait forever"; a start-up that can hang is refused.
    if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or int(value) < 1:
        raise DatabaseUrlError("DATABASE_URL parameter 'connect_timeout' must be a whole number of seconds, at least 1")
    found.connect_timeout = int(value)


def _application_name(found: Parameters, name: str, value: str) -> None:
    if any(not ch.isprintable() for ch in value):
        raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} must be printable text")
    if name == "application_name":
        found.application_name = value
    else:
        found.fallback_name = value


def _options(found: Parameters, _name: str, value: str) -> None:
    found.server_settings.update(parse_options(value))


def _pgbouncer(_found: Parameters, name: str, value: str) -> None:
    # Prisma's flag for "behind PgBouncer: no prepared statements". The engine is always
    # pooler-safe, so it changes nothing; a value that is neither true nor false is a typo.
    if value.lower() not in (*_TRUE, *_FALSE):
        raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} must be true or false")


def _target_session_attrs(found: Parameters, name: str, value: str) -> None:
    found.connect_args["target_session_attrs"] = _one_of(name, value, TARGET_SESSION_ATTRS)


def _dbname(found: Parameters, _name: str, value: str) -> None:
    found.connect_args["database"] = value


def _pass_through(found: Parameters, name: str, value: str) -> None:
    found.passed[name] = value


def _from_environment(_found: Parameters, name: str, _value: str) -> None:
    raise DatabaseUrlError(
        f"DATABASE_URL parameter {name!r} is not supported: set the environment variable "
        f"{_FROM_ENVIRONMENT[name]} to the file's path instead"
    )


def read_query(query: str) -> Parameters:
    """DATABASE_URL's query (after the `?`), each parameter translated or refused by name.

    Query values are percent-decoded as libpq does (a `+` stays a `+`).
    """
    params: dict[str, str] = {}
    for pair in query.split("&") if query else []:
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if name in params:
            raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} is given twice")
        params[name] = value
    if "sslmode" in params and "ssl" in params:
        raise DatabaseUrlError("DATABASE_URL: give sslmode or ssl, not both")

    found = Parameters()
    for name, value in params.items():
        handler = _HANDLERS.get(name)
        if handler is None:
            raise _unsupported(name)
        handler(found, name, value)
    return found


_HANDLERS: dict[str, Callable[[Parameters, str, str], None]] = {
    "sslmode": _ssl,
    "ssl": _ssl,  # asyncpg's own spelling, as postgresql+asyncpg:// URLs carry it
    "connect_timeout": _timeout,
    "application_name": _application_name,
    "fallback_application_name": _application_name,
    "options": _options,
    "pgbouncer": _pgbouncer,
    "target_session_attrs": _target_session_attrs,
    "dbname": _dbname,
    **dict.fromkeys(_PASSED_THROUGH, _pass_through),
    **dict.fromkeys(_FROM_ENVIRONMENT, _from_environment),
}
SUPPORTED = tuple(name for name in _HANDLERS if name not in _FROM_ENVIRONMENT)


def _unsupported(name: str) -> DatabaseUrlError:
    close = difflib.get_close_matches(name.lower(), SUPPORTED, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return DatabaseUrlError(
        f"DATABASE_URL parameter {_shown(name)} is not supported ({hint}supported: {', '.join(SUPPORTED)})"
    )


def parse_options(text: str) -> dict[str, str]:
    """libpq's `options` (`-c statement_timeout=5000 --search_path=app`) as server settings.

    Split as the server splits it (whitespace separates words, a backslash escapes the next
    character); only run-time settings (`-c name=value`, `-cname=value`, `--name=value`) are
    accepted, as the other switches of the server's command line make no sense per connection.
    """
    settings: dict[str, str] = {}
    words = iter(_split_words(text))
    for word in words:
        if word == "-c":
            assignment = next(words, "")
        elif word.startswith(("--", "-c")):
            assignment = word[2:]
        else:
            raise DatabaseUrlError(
                f"DATABASE_URL parameter 'options': {_shown(word)} is not supported, only '-c name=value' settings"
            )
        name, equals, value = assignment.partition("=")
        name = name.replace("-", "_")  # as the server reads `--statement-timeout=5s`
        if not equals or not _SETTING_NAME.fullmatch(name):
            raise DatabaseUrlError(
                f"DATABASE_URL parameter 'options': expected '-c name=value', got {_shown('-c ' + assignment)}"
            )
        settings[name.lower()] = value
    return settings


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    in_word = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = in_word = True
        elif ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(ch)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} must be one of {', '.join(allowed)}")
    return value


def _shown(text: str) -> str:
    """A word of the operator's for an error message: quoted, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "…")
