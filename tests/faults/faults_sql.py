"""Faults injected inside PostgreSQL: a trigger that holds one statement, chosen by what the
transaction can see, so a fault lands in a precise batch of a job without any timing guesswork."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

HOLD_SECONDS = 30  # the held statement sleeps this long unless the test ends it sooner


async def hold_statement(
    engine: AsyncEngine, *, table: str, event: str, condition: str, seconds: float = HOLD_SECONDS
) -> None:
    """The first `event` (INSERT, DELETE) statement on `table` that finds `condition` true, in
    its own transaction, sleeps `seconds`: the backend shows wait_event 'PgSleep' meanwhile.

    Fires once (a sequence, which no rollback undoes, counts it). Statement-level, so an
    executemany fires it per row; the condition decides which batch is hit.
    """
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE fault_holds"))
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION fault_hold() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {condition} THEN
                        IF nextval('fault_holds') = 1 THEN
                            PERFORM pg_sleep({seconds});
                        END IF;
                    END IF;
                    RETURN NULL;
                END $$
                """
            )
        )
        await conn.execute(
            text(f"CREATE TRIGGER fault_hold AFTER {event} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION fault_hold()")
        )


async def held_backend(engine: AsyncEngine) -> int | None:
    """The pid of the daemon's backend sleeping in the held statement, if any."""
    async with engine.connect() as conn:
        pid = await conn.scalar(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'flavor-scheduler' AND wait_event = 'PgSleep'"
            )
        )
        return int(pid) if pid is not None else None


async def terminate(engine: AsyncEngine, pid: int) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}))


async def idle_in_transaction(engine: AsyncEngine) -> int:
    """The daemon's sessions sitting idle inside a transaction (a client that went away)."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'flavor-scheduler' AND state LIKE 'idle in transaction%'"
            )
        )
        return int(count or 0)


async def waiting_mid_statement(engine: AsyncEngine) -> int:
    """The daemon's sessions inside a transaction, waiting for the rest of a statement that never
    comes (a middlebox silenced the connection between its messages). No timeout of the server's
    ends them: their locks are held until the connection closes."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'flavor-scheduler' AND state = 'active' AND wait_event = 'ClientRead' "
                "AND xact_start IS NOT NULL"
            )
        )
    return int(count or 0)


async def set_database_option(engine: AsyncEngine, name: str, value: str | None) -> None:
    """ALTER DATABASE <this test's database> SET name = value (RESET when None): new sessions only."""
    database = engine.url.database
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if value is None:
            await autocommit.execute(text(f'ALTER DATABASE "{database}" RESET {name}'))
        else:
            await autocommit.execute(text(f"ALTER DATABASE \"{database}\" SET {name} = '{value}'"))
