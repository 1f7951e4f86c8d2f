"""The one door to the database: transactions and connections whose failures come out as
DatabaseError, so no layer above the database needs to know SQLAlchemy's or the driver's errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler.db.errors import DatabaseError


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy's and the network's errors (timeouts included) as DatabaseError."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError.wrapping(exc) from exc


class Database:
    """The engine, opened only through `begin()` (a transaction) or `connect()`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the block ends without an exception."""
        with translated_errors():
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection outside a transaction of ours (reads, or several short transactions)."""
        with translated_errors():
            async with self.engine.connect() as conn:
                yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
