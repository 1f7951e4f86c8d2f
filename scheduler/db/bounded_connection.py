"""asyncpg's connection with every transaction and every close bounded in time, at no cost.

Used by the engine and by the console's own connection (`direct.py`): importing it costs asyncpg
alone, not SQLAlchemy.
"""

from __future__ import annotations

import asyncpg

# A connection a middlebox dropped without a word leaves its server side "idle in transaction",
# holding its locks for good. A transaction of ours left idle this long is ended by PostgreSQL,
# releasing the rows it locked (bookings, the reminder ledger, deliveries) for the next run and
# for the platform. Set by every BEGIN of ours (`SET LOCAL`, which a transaction-mode
# pooler allows), in the BEGIN's own round trip.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60
# Closing a connection sends a goodbye and waits for the server to hang up. On a connection a
# middlebox dropped, that answer never comes: asyncpg's close without a timeout (the pool's own
# close, at shutdown) would wait for good. Past this the connection is abandoned; the server ends
# its session by its own timeouts.
CLOSE_TIMEOUT_SECONDS = 2.0


def idle_in_transaction_timeout() -> str:
    """IDLE_IN_TRANSACTION_TIMEOUT_SECONDS as a PostgreSQL setting value."""
    return f"{int(IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000)}ms"


class BoundedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no types
    """asyncpg's connection whose every transaction is bounded from its start: PostgreSQL ends one
    left idle (our side of the connection gone mid-transaction), whichever statement it was at and
    whatever it locked. Its close is bounded too.

    asyncpg starts a transaction with one simple-protocol `BEGIN ...;` (SQLAlchemy's too); the
    `SET LOCAL` rides in that query, so the bound costs no round trip of its own.
    """

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        """asyncpg's close, never unbounded (it aborts the connection when the time is up)."""
        await super().close(timeout=CLOSE_TIMEOUT_SECONDS if timeout is None else timeout)

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:  # noqa: ASYNC109 - asyncpg's signature
        if not args and query.startswith("BEGIN"):
            query = f"{query} SET LOCAL idle_in_transaction_session_timeout = '{idle_in_transaction_timeout()}';"
        result: str = await super().execute(query, *args, timeout=timeout)
        return result
