"""Database failures in one line, as results, logs and --check show them."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def describe_db_error(exc: BaseException) -> str:
    """One line naming a database failure, without the statement or its parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner: BaseException = exc.orig
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
