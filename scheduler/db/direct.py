"""One asyncpg connection without SQLAlchemy, for the console's short commands.

Importing SQLAlchemy's async engine takes 0.4-0.7 s, more than a console command may take in all
(CONTRACT §3: 0.5 s). The connection is made from the same DATABASE_URL translation as the
engine's (`database_url.parse`), is as safe behind a transaction-mode pooler (no statement
cache, no session state), and its failures come out as DatabaseError like every other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from scheduler import database_url
from scheduler.db.errors import DatabaseError

if TYPE_CHECKING:
    import asyncpg

APPLICATION_NAME = "flavor-scheduler-console"  # in pg_stat_activity, unless DATABASE_URL names another


@contextmanager
def _translated() -> Iterator[None]:
    import asyncpg

    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise DatabaseError.wrapping(exc) from exc


@asynccontextmanager
async def connect(
    url: str, *, connect_timeout_seconds: float, command_timeout_seconds: float
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to DATABASE_URL (either scheme); the shorter of its `connect_timeout` and ours applies."""
    import asyncpg

    from scheduler.db.bounded_connection import BoundedConnection

    _, _, rest = url.partition("://")
    target = database_url.parse(f"{database_url.ASYNCPG_SCHEME}://{rest}")
    timeout = min(connect_timeout_seconds, target.connect_timeout_seconds or connect_timeout_seconds)
    arguments: dict[str, Any] = {
        "statement_cache_size": 0,  # a transaction-mode pooler may hand each statement another server
        "timeout": timeout,
        "command_timeout": command_timeout_seconds,
        "connection_class": BoundedConnection,
        "server_settings": {**target.server_settings, "application_name": target.application_name or APPLICATION_NAME},
        **target.connect_args,
    }
    if target.ssl is not None:
        arguments["ssl"] = target.ssl
    dsn = "postgresql://" + target.url.partition("://")[2]
    with _translated():
        conn = await asyncpg.connect(dsn, **arguments)
    try:
        with _translated():
            yield conn
    except BaseException:
        conn.terminate()  # the connection may be broken: closing it politely could hang or hide the error
        raise
    with _translated():
        await conn.close(timeout=command_timeout_seconds)
