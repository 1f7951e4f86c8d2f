"""The async engine, built the one way that is safe behind a transaction-mode pooler."""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

CONNECT_TIMEOUT_SECONDS = 10  # a database that does not answer in 10 s is down for our purposes
COMMAND_TIMEOUT_SECONDS = 300  # no statement of ours should run 5 minutes; a hung one must end


def _statement_name() -> str:
    # Unique names: through PgBouncer a statement prepared on one server connection may be
    # looked up on another, so names must never repeat (SQLAlchemy's documented recipe).
    return f"__fs_{uuid4().hex}__"


def create_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """An asyncpg engine that relies on no session state: no statement caches, no SET, no advisory locks."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _statement_name,
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": COMMAND_TIMEOUT_SECONDS,
            "server_settings": {"application_name": "flavor-scheduler"},
        },
    )
