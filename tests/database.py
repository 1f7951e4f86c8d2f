"""The test suite's PostgreSQL: TEST_DATABASE_URL when set, else an embedded server of its own.

A template database holds the platform's tables and the daemon's migrated schema; each test
gets a fresh copy (CREATE DATABASE ... TEMPLATE), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.engine import make_url

from scheduler.db import migrate
from scheduler.db.engine import create_engine
from scheduler.demo.seed import create_platform_tables


def to_asyncpg(url: str) -> str:
    _, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}"


def with_database(url: str, name: str) -> str:
    """The same server URL, pointed at database `name`."""
    return make_url(to_asyncpg(url)).set(database=name).render_as_string(hide_password=False)


def over_tcp(url: str) -> bool:
    """Whether the URL reaches the server over TCP (an embedded server listens on a socket only)."""
    return make_url(url).host is not None


def to_libpq(url: str) -> str:
    """A plain postgresql:// URL, as an operator would write DATABASE_URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextmanager
def server_url() -> Iterator[str]:
    """The URL of a server the tests may create databases on."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield to_asyncpg(given)
        return
    from scheduler.demo.embedded import embedded_server

    base = Path(tempfile.mkdtemp(prefix="fs-test-pg-"))
    os.chmod(base, 0o755)  # the embedded server may run as its own system user
    try:
        with embedded_server(base / "data") as uri:
            _, _, query = uri.partition("?")
            yield f"postgresql+asyncpg://postgres@/postgres?{query}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def admin(url: str, *statements: str) -> None:
    """Run statements outside a transaction on the server's `postgres` database (CREATE/DROP DATABASE)."""
    engine = create_engine(with_database(url, "postgres"), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")  # in place: CREATE DATABASE, VACUUM
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


class DatabaseFactory:
    """Creates the template once, then a fresh database per test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.template = f"fs_template_{os.getpid()}_{uuid4().hex[:6]}"

    def create_template(self) -> None:
        async def go() -> None:
            await admin(self.url, f'CREATE DATABASE "{self.template}"')
            engine = create_engine(with_database(self.url, self.template), pool_size=1)
            try:
                async with engine.begin() as conn:
                    await create_platform_tables(conn)
                await migrate.upgrade(engine)
            finally:
                await engine.dispose()

        asyncio.run(go())

    def drop_template(self) -> None:
        asyncio.run(admin(self.url, f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))

    async def create(self, *, migrated: bool = True) -> str:
        name = f"fs_test_{uuid4().hex[:12]}"
        if migrated:
            await admin(self.url, f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        else:
            await admin(self.url, f'CREATE DATABASE "{name}"')
        return with_database(self.url, name)

    async def drop(self, url: str) -> None:
        name = make_url(url).database
        await admin(self.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
