"""Database failures in one line, as results, logs and --check show them.

A failure to connect says which of the usual causes it is (host not found, connection refused,
credentials refused, database missing, TLS), naming the host, port, user or database from
DATABASE_URL; never its password.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ConnectProblem(StrEnum):
    HOST_NOT_FOUND = "host_not_found"
    REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    CREDENTIALS = "credentials_refused"
    DATABASE_MISSING = "database_missing"
    TLS_REQUIRED = "tls_required"
    TLS_UNAVAILABLE = "tls_unavailable"
    PRIVILEGE = "insufficient_privilege"


# Problems that waiting does not cure: the daemon stops at start instead of retrying (CONTRACT §5).
FATAL_PROBLEMS = frozenset(
    {
        ConnectProblem.CREDENTIALS,
        ConnectProblem.DATABASE_MISSING,
        ConnectProblem.TLS_REQUIRED,
        ConnectProblem.TLS_UNAVAILABLE,
        ConnectProblem.PRIVILEGE,
    }
)


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    problem: ConnectProblem
    message: str

    @property
    def fatal(self) -> bool:
        return self.problem in FATAL_PROBLEMS


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    user: str
    database: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if not self.host.startswith("/") else f"{self.host} (port {self.port})"


def _target(url: str) -> _Target:
    from scheduler.database_url import url_parts

    try:
        parsed = url_parts(url)
        query: dict[str, Any] = parsed.query
        host = parsed.host or query.get("host") or "localhost"
        port = parsed.port or int(query.get("port") or 5432)
    except ValueError:  # an unparseable URL was refused by the settings already; say nothing of it
        return _Target("the database host", 5432, "?", "?")
    return _Target(host, port, parsed.username or "?", parsed.database or "?")


def _wrapped_driver_error(exc: BaseException) -> BaseException | None:
    """The driver's error SQLAlchemy wrapped, if it is one of SQLAlchemy's (only then is it loaded:
    the console talks to asyncpg directly and never imports SQLAlchemy)."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError

    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else None


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrappers."""
    if (orig := _wrapped_driver_error(exc)) is not None:
        return orig.__cause__ if orig.__cause__ is not None else orig
    return exc


def explain_connect_error(exc: BaseException, url: str) -> ConnectFailure | None:  # noqa: PLR0911 - one return per cause
    """Which of the usual reasons a connection to DATABASE_URL failed, or None when it is another error."""
    target = _target(url)
    error = _driver_error(exc)
    name = type(error).__name__
    text = str(error)
    if isinstance(error, socket.gaierror):
        return ConnectFailure(
            ConnectProblem.HOST_NOT_FOUND, f"database host {target.host!r} not found (check the host in DATABASE_URL)"
        )
    if isinstance(error, ConnectionRefusedError) or (isinstance(error, OSError) and "Connect call failed" in text):
        return ConnectFailure(
            ConnectProblem.REFUSED,
            f"connection refused by {target.address}: is PostgreSQL running there and listening on that port?",
        )
    if "rejected SSL upgrade" in text or "does not support SSL" in text:
        return ConnectFailure(
            ConnectProblem.TLS_UNAVAILABLE,
            f"the server at {target.address} does not offer TLS, but DATABASE_URL asks for it (sslmode)",
        )
    if name == "InvalidPasswordError" or "password authentication failed" in text:
        return ConnectFailure(
            ConnectProblem.CREDENTIALS,
            f"the server at {target.address} refused the credentials of user {target.user!r} "
            "(check the user name and password in DATABASE_URL)",
        )
    if name == "InvalidCatalogNameError":
        return ConnectFailure(
            ConnectProblem.DATABASE_MISSING, f"database {target.database!r} does not exist on {target.address}"
        )
    if name == "InvalidAuthorizationSpecificationError" or "pg_hba.conf" in text:
        # "no pg_hba.conf entry ..., no encryption": perhaps only TLS connections are allowed. A
        # `reject` line says "rejects connection" and "no encryption" too: TLS would not help.
        if ("no encryption" in text or "SSL off" in text) and "rejects connection" not in text:
            return ConnectFailure(
                ConnectProblem.TLS_REQUIRED,
                f"the server at {target.address} requires TLS: add ?sslmode=require to DATABASE_URL",
            )
        if "role" in text and "does not exist" in text:
            reason = "no such role"
        elif "not permitted to log in" in text:
            reason = "the role may not log in"
        else:
            reason = "not allowed from this host (pg_hba.conf)"
        return ConnectFailure(
            ConnectProblem.CREDENTIALS,
            f"the server at {target.address} refused user {target.user!r}: {reason}",
        )
    if name == "InsufficientPrivilegeError":
        # At start: the daemon creates and migrates its own schema in this database.
        return ConnectFailure(
            ConnectProblem.PRIVILEGE,
            f"user {target.user!r} lacks a privilege in database {target.database!r}: {text.strip()} "
            "(the daemon creates its schema flavor_scheduler there; see docs/platform-schema.md)",
        )
    if isinstance(error, TimeoutError):
        return ConnectFailure(ConnectProblem.TIMEOUT, f"no answer from {target.address} in time")
    return None


def describe_db_error(exc: BaseException, *, url: str | None = None) -> str:
    """One line naming a database failure, without the statement or its parameters.

    With DATABASE_URL given, a failure to connect says which one it is (see explain_connect_error).
    """
    if url is not None:
        failure = explain_connect_error(exc, url)
        if failure is not None:
            return failure.message
    if (inner := _wrapped_driver_error(exc)) is not None:
        # SQLAlchemy's asyncpg adapter wraps the driver's error in a generic `Error`; name the driver's.
        named = inner.__cause__ if inner.__cause__ is not None else inner
        return f"{type(named).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError) and not text:
        # asyncpg's command timeout says nothing; say what it means.
        text = "no answer from the database in time (a lost connection, or a lock held elsewhere)"
    return f"{type(exc).__name__}: {text}"


class DatabaseError(Exception):
    """Any failure to talk to the database, wrapped once at the database layer.

    The layers above catch this, never the driver's or SQLAlchemy's exceptions; its message is
    `describe_db_error` of the cause: one line, no statement, no parameters.
    """

    @classmethod
    def wrapping(cls, cause: BaseException) -> DatabaseError:
        error = cls(describe_db_error(cause))
        error.__cause__ = cause
        return error
