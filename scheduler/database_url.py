"""DATABASE_URL as libpq users write it, turned into the URL and connect arguments asyncpg takes.

SQLAlchemy hands every query parameter to `asyncpg.connect()` as a keyword, so libpq's own
(`?connect_timeout=10`) crashed the first connection with a TypeError. Each parameter is either
translated, or refused with an error naming it, before anything connects: the table of them is
`url_parameters.py`; here is the URL around them, read by SQLAlchemy's grammar without importing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from scheduler.url_parameters import DatabaseUrlError, read_query

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
    found = read_query(query)
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
