"""What the benchmarks share: a PostgreSQL to run on, and a fresh database with the platform's tables."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db import migrate
from scheduler.db.engine import create_engine
from scheduler.demo.seed import create_platform_tables
from tests.database import admin, with_database

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def bench_server() -> Iterator[str]:
    """BENCH_DATABASE_URL, else this machine's server if it answers, else an embedded one."""
    given = os.environ.get("BENCH_DATABASE_URL")
    if given:
        yield given.replace("postgresql://", "postgresql+asyncpg://", 1)
        return
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", 5432)) == 0:
            yield LOCAL_SERVER.replace("postgresql://", "postgresql+asyncpg://", 1)
            return
    from scheduler.demo.embedded import embedded_server

    base = Path(tempfile.mkdtemp(prefix="fs-bench-pg-"))
    base.chmod(0o755)
    try:
        with embedded_server(base / "data") as uri:
            yield f"postgresql+asyncpg://postgres@/postgres?{uri.partition('?')[2]}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def fresh_database(server: str, *, template: str | None = None) -> str:
    """A new database (a copy of `template` when given) with our schema migrated; returns its URL."""
    name = f"fs_bench_{uuid4().hex[:10]}"
    await admin(server, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    url = with_database(server, name)
    if template is None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await create_platform_tables(conn)
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
    return url


async def drop_database(server: str, url: str) -> None:
    await admin(server, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def transaction_durations(engine: AsyncEngine) -> list[float]:
    """A list that fills with the seconds each transaction on `engine` stays open, from its
    BEGIN to its COMMIT or ROLLBACK (the longest is what a batch bound promises)."""
    durations: list[float] = []
    opened: dict[int, float] = {}

    def on_begin(conn: object) -> None:
        opened[id(conn)] = time.perf_counter()

    def on_end(conn: object) -> None:
        began = opened.pop(id(conn), None)
        if began is not None:
            durations.append(time.perf_counter() - began)

    event.listen(engine.sync_engine, "begin", on_begin)
    event.listen(engine.sync_engine, "commit", on_end)
    event.listen(engine.sync_engine, "rollback", on_end)
    return durations
