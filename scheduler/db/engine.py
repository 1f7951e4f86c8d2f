"""The async engine, built the one way that is safe behind a transaction-mode pooler."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from scheduler import database_url
from scheduler.db.bounded_connection import BoundedConnection

CONNECT_TIMEOUT_SECONDS = 10  # a database that does not answer in 10 s is down for our purposes
APPLICATION_NAME = "flavor-scheduler"  # in pg_stat_activity, unless DATABASE_URL names another
# Every statement of ours is a bounded batch that takes well under a second. One still waiting
# after a minute waits on a connection a middlebox dropped without a word (nothing comes back,
# and TCP keepalives cannot tell when the middlebox itself answers them) or on a lock held
# elsewhere: the run fails and the next one resumes, instead of hanging for minutes.
COMMAND_TIMEOUT_SECONDS = 60
# A pooled connection is pinged before use (a database restart or failover leaves the pool's
# connections dead) unless it was in use this recently: HikariCP's "alive bypass window". The
# senders check a connection out for every message they settle, and a ping is three round trips.
# One that died within that half second fails its first statement instead (the run or message
# fails and is retried as after any lost connection), and SQLAlchemy then discards the pool.
PING_BYPASS_SECONDS = 0.5
_IDLE_SINCE = "flavor_scheduler_idle_since"


def _statement_name() -> str:
    """The unnamed statement, for every statement: no name to collide on another server connection
    behind PgBouncer, and none left to close. asyncpg closes a named statement the next time the
    connection prepares one, waiting for that answer with no timeout at all: on a connection a
    middlebox dropped between the two, the run would wait for good (`COMMAND_TIMEOUT_SECONDS`
    bounds the statements, not that clean-up). With the statement cache off, asyncpg sends the
    unnamed statement's Parse again with its Bind, in the same round trip."""
    return ""


def _ping_unless_just_used(engine: AsyncEngine) -> None:
    """SQLAlchemy's pre-ping, skipped for a connection that was in use less than PING_BYPASS_SECONDS ago."""
    dialect: Dialect = engine.dialect

    @event.listens_for(engine.sync_engine.pool, "connect")
    @event.listens_for(engine.sync_engine.pool, "checkin")
    def idle_from_now(_dbapi: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def ping(dbapi: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) < PING_BYPASS_SECONDS:
            return
        try:
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi, None):
                raise exc.InvalidatePoolError(str(error)) from error  # a fresh connection is made
            raise


def create_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """An asyncpg engine that relies on no session state: no statement caches, no session SET, no advisory locks.

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
        "connection_class": BoundedConnection,
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
        pool_recycle=1800,
        connect_args=connect_args,
    )
    _ping_unless_just_used(engine)
    return engine
