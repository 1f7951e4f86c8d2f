"""DATABASE_URL as libpq users write it, turned into the URL and connect arguments asyncpg takes.

SQLAlchemy hands every query parameter to `asyncpg.connect()` as a keyword, so libpq's own
(`?connect_timeout=10`) crashed the first connection with a TypeError. Here each parameter is
either translated, or refused with an error naming it, before anything connects.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

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

ASYNCPG_SCHEME = "postgresql+asyncpg"

# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url): what is checked here is what the
# engine will read, without importing SQLAlchemy (0.3 s) just to read a setting (the console's
# commands answer in well under a second).
_URL = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.VERBOSE,
)


class DatabaseUrlError(ValueError):
    """A DATABASE_URL parameter that cannot be honoured; the message names it, never the password."""


@dataclass(frozen=True, slots=True)
class UrlParts:
    """A URL's parts as SQLAlchemy reads them (user, password and database percent-decoded)."""

    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: dict[str, str]


def url_parts(url: str) -> UrlParts:
    """Split a URL as SQLAlchemy's make_url does; ValueError when it would refuse it (a bad port)."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("not a URL")
    found = match.groupdict()
    port = int(found["port"]) if found["port"] else None  # ValueError, as SQLAlchemy's
    return UrlParts(
        username=unquote(found["username"]) if found["username"] is not None else None,
        password=unquote(found["password"]) if found["password"] is not None else None,
        host=found["ipv4host"] or found["ipv6host"],
        port=port,
        database=unquote(found["database"]) if found["database"] is not None else None,
        query=dict(parse_qsl(found["query"] or "")),
    )


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """The URL for SQLAlchemy (parameters it understands itself) and what goes to asyncpg.connect()."""

    url: str
    ssl: str | None = None
    connect_timeout_seconds: int | None = None
    application_name: str | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    connect_args: dict[str, Any] = field(default_factory=dict)


def parse(url: str) -> ConnectTarget:
    """Split DATABASE_URL (already `postgresql+asyncpg://`) into what SQLAlchemy and asyncpg take.

    Query values are percent-decoded as libpq does (a `+` stays a `+`).
    """
    base, query = _split_query(url)
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

    found = _Found()
    for name, value in params.items():
        handler = _HANDLERS.get(name)
        if handler is None:
            raise _unsupported(name)
        handler(found, name, value)
    app_name = found.application_name or found.server_settings.pop("application_name", None) or found.fallback_name

    try:
        url_parts(base)
    except ValueError:  # its message would quote the URL, password and all
        raise DatabaseUrlError(
            "DATABASE_URL is not a valid URL: percent-encode special characters in the user name and password"
        ) from None
    sqlalchemy_url = f"{base}?{urlencode(found.passed)}" if found.passed else base
    if found.passed.keys() & {"host", "port"}:
        _check_hosts(sqlalchemy_url)
    return ConnectTarget(
        sqlalchemy_url, found.ssl, found.connect_timeout, app_name, found.server_settings, found.connect_args
    )


@dataclass(slots=True)
class _Found:
    """What the query's parameters said, as parse() collects it."""

    passed: dict[str, str] = field(default_factory=dict)
    ssl: str | None = None
    connect_timeout: int | None = None
    application_name: str | None = None
    fallback_name: str | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    connect_args: dict[str, Any] = field(default_factory=dict)


def _ssl(found: _Found, name: str, value: str) -> None:
    found.ssl = _one_of(name, value.lower(), SSL_MODES)


def _timeout(found: _Found, _name: str, value: str) -> None:
    # libpq reads 0 or a negative number as "wait forever"; a start-up that can hang is refused.
    if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or int(value) < 1:
        raise DatabaseUrlError("DATABASE_URL parameter 'connect_timeout' must be a whole number of seconds, at least 1")
    found.connect_timeout = int(value)


def _application_name(found: _Found, name: str, value: str) -> None:
    if any(not ch.isprintable() for ch in value):
        raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} must be printable text")
    if name == "application_name":
        found.application_name = value
    else:
        found.fallback_name = value


def _options(found: _Found, _name: str, value: str) -> None:
    found.server_settings.update(parse_options(value))


def _pgbouncer(_found: _Found, name: str, value: str) -> None:
    # Prisma's flag for "behind PgBouncer: no prepared statements". The engine is always
    # pooler-safe, so it changes nothing; a value that is neither true nor false is a typo.
    if value.lower() not in (*_TRUE, *_FALSE):
        raise DatabaseUrlError(f"DATABASE_URL parameter {name!r} must be true or false")


def _target_session_attrs(found: _Found, name: str, value: str) -> None:
    found.connect_args["target_session_attrs"] = _one_of(name, value, TARGET_SESSION_ATTRS)


def _dbname(found: _Found, _name: str, value: str) -> None:
    found.connect_args["database"] = value


def _pass_through(found: _Found, name: str, value: str) -> None:
    found.passed[name] = value


def _from_environment(_found: _Found, name: str, _value: str) -> None:
    raise DatabaseUrlError(
        f"DATABASE_URL parameter {name!r} is not supported: set the environment variable "
        f"{_FROM_ENVIRONMENT[name]} to the file's path instead"
    )


_HANDLERS: dict[str, Callable[[_Found, str, str], None]] = {
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


def _check_hosts(url: str) -> None:
    """Query hosts and ports as SQLAlchemy's dialect will read them, refused now rather than at connect."""
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        _, opts = PGDialect_asyncpg().create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    except (ArgumentError, ValueError, TypeError):
        opts = {"port": -1}
    port = opts.get("port")
    ports = port if isinstance(port, list) else [port]
    if not all(port is None or (isinstance(port, int) and 0 < port < 65536) for port in ports):
        raise DatabaseUrlError(
            "DATABASE_URL parameters 'host' and 'port': write host=h1,h2&port=p1,p2 (as many port numbers, "
            "1-65535, as hosts) or host=h1:p1"
        )


def _split_query(url: str) -> tuple[str, str]:
    # The password may hold a '?': the query starts after the last '@'.
    at = url.rfind("@")
    question = url.find("?", at + 1)
    if question < 0:
        return url, ""
    return url[:question], url[question + 1 :]


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


def check_url(url: str) -> None:
    """DATABASE_URL as the settings accept it; a ValueError says what is wrong, never the password."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres", ASYNCPG_SCHEME):
        raise ValueError("DATABASE_URL must start with postgresql:// or postgresql+asyncpg://")
    if rest.partition("?")[0].count("@") > 1:
        # user:p@ss@host parses as host "ss@host": say what is wrong, not "host not found".
        raise ValueError(
            "DATABASE_URL has more than one '@': percent-encode an '@' in the user name or password "
            "as %40 (and ':' as %3A, '/' as %2F)"
        )
    # libpq's query parameters are translated or refused here, by name (exit 2), rather than
    # reaching asyncpg.connect() as keywords it does not know (a TypeError).
    target = parse(f"{ASYNCPG_SCHEME}://{rest}")
    try:
        port = url_parts(target.url).port
    except ValueError:  # the parser's message would quote the URL, password and all
        port = 0
    if port is not None and not 0 < port < 65536:
        raise ValueError(
            "DATABASE_URL is not a valid URL: check the port, and percent-encode special "
            "characters in the user name and password"
        )
