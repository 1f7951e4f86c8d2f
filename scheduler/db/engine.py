"""The async engine, built the one way that is safe behind a transaction-mode pooler."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from scheduler import database_url

CONNECT_TIMEOUT_SECONDS = 10  # a database that does not answer in 10 s is down for our purposes
APPLICATION_NAME = "flavor-scheduler"  # in pg_stat_activity, unless DATABASE_URL names another
# Every statement of ours is a bounded batch that takes well under a second. One still waiting
# after a minute waits on a connection a middlebox dropped without a word (nothing comes back,
# and TCP keepalives cannot tell when the middlebox itself answers them) or on a lock held
# elsewhere: the run fails and the next one resumes, instead of hanging for minutes.
COMMAND_TIMEOUT_SECONDS = 60
# The server's side of such a connection: a transaction of ours left idle this long is ended by
# PostgreSQL, releasing the rows it locked (bookings, the reminder ledger, deliveries) for the next
# run and for the platform. Set at the start of every transaction (an engine event), which a
# transaction-mode pooler allows.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60

_BOUND_IDLE_SQL = text("SELECT set_config('idle_in_transaction_session_timeout', :value, true)")


def idle_in_transaction_timeout() -> str:
    """IDLE_IN_TRANSACTION_TIMEOUT_SECONDS as a PostgreSQL setting value."""
    return f"{int(IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000)}ms"


def _bound_idle_in_transaction(conn: Connection) -> None:
    """Every transaction of ours starts so: PostgreSQL ends it if it is left idle (our side of
    the connection gone mid-transaction), whichever statement it was at and whatever it locked."""
    conn.execute(_BOUND_IDLE_SQL, {"value": idle_in_transaction_timeout()})


def _statement_name() -> str:
    # Unique names: through PgBouncer a statement prepared on one server connection may be
    # looked up on another, so names must never repeat (SQLAlchemy's documented recipe).
    return f"__fs_{uuid4().hex}__"


def create_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """An asyncpg engine that relies on no session state: no statement caches, no SET, no advisory locks.

    `url` may carry libpq's query parameters (`sslmode`, `connect_timeout`, `application_name`,
    `options`, `pgbouncer`, ...): they become asyncpg's connect arguments (`database_url.py`), and one it
    cannot honour raises DatabaseUrlError naming it (Settings reports it at start, exit 2).
    """
    target = database_url.parse(url)
    connect_args: dict[str, Any] = {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _statement_name,
        "timeout": target.connect_timeout_seconds or CONNECT_TIMEOUT_SECONDS,
        "command_timeout": COMMAND_TIMEOUT_SECONDS,
        # `options` are startup parameters like application_name: sent once per connection, no SET.
        "server_settings": {**target.server_settings, "application_name": target.application_name or APPLICATION_NAME},
        **target.connect_args,
    }
    if target.ssl is not None:
        connect_args["ssl"] = target.ssl
    engine = create_async_engine(
        target.url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "begin", _bound_idle_in_transaction)
    return engine
