"""DATABASE_URL's libpq parameters against the real PostgreSQL: each one accepted is in effect on
the server (pg_stat_activity, SHOW, pg_stat_ssl), and through the CLI one that cannot be honoured
stops the program with exit 2 naming it, never a traceback (CONTRACT §4)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.engine import APPLICATION_NAME, CONNECT_TIMEOUT_SECONDS, create_engine
from tests.acceptance.cli import clean_env, run_cli
from tests.database import over_tcp, to_libpq

PASSWORD = "url-S3cret-pw-7c1e"  # the test server trusts local connections: any password works


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextlib.asynccontextmanager
async def engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


async def server_view(engine: AsyncEngine) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT a.application_name, current_setting('statement_timeout') AS statement_timeout, "
                    "current_setting('lock_timeout') AS lock_timeout, s.ssl "
                    "FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) WHERE a.pid = pg_backend_pid()"
                )
            )
        ).one()
    return dict(row._mapping)


async def test_application_name_options_and_sslmode_are_in_effect_on_the_server(database_url: str) -> None:
    query = (
        "sslmode=disable&connect_timeout=5&pgbouncer=true&application_name=flavor-url-test"
        "&options=-c%20statement_timeout%3D5000%20-c%20lock_timeout%3D1234"
    )
    async with engine_for(with_query(database_url, query)) as engine:
        seen = await server_view(engine)
    assert seen == {
        "application_name": "flavor-url-test",
        "statement_timeout": "5s",
        "lock_timeout": "1234ms",
        "ssl": False,
    }


async def test_without_parameters_the_daemon_names_itself(database_url: str) -> None:
    async with engine_for(database_url) as engine:
        seen = await server_view(engine)
    assert seen["application_name"] == APPLICATION_NAME


async def test_options_statement_timeout_cancels_a_long_statement(database_url: str) -> None:
    url = with_query(database_url, "options=-c%20statement_timeout%3D200")
    async with engine_for(url) as engine, engine.connect() as conn:
        with pytest.raises(Exception, match="statement timeout"):
            await conn.execute(text("SELECT pg_sleep(5)"))


async def test_sslmode_require_is_not_ignored(database_url: str) -> None:
    """The test server has no SSL: require must fail to connect rather than quietly go plain."""
    if not over_tcp(database_url):
        pytest.skip("the test server listens on a socket only, where sslmode does not apply (as in libpq)")
    async with engine_for(with_query(database_url, "sslmode=require")) as engine:
        with pytest.raises(Exception, match=r"(?i)ssl"):
            async with engine.connect():
                pass


async def test_connect_timeout_bounds_a_server_that_never_answers() -> None:
    """A loopback listener that accepts and says nothing: connect_timeout=1 gives up in about 1 s
    (the default is CONNECT_TIMEOUT_SECONDS)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{port}/app?connect_timeout=1&sslmode=disable"
        async with engine_for(url) as engine:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with engine.connect():
                    pass
            elapsed = time.monotonic() - started
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted, "the client never connected"
    assert 0.9 <= elapsed < CONNECT_TIMEOUT_SECONDS / 2, elapsed


def test_the_cli_runs_a_job_with_every_libpq_parameter(database_url: str) -> None:
    query = (
        "sslmode=prefer&connect_timeout=10&application_name=flavor-cli&pgbouncer=true"
        "&options=-c%20statement_timeout%3D5000"
    )
    done = run_cli(
        "--run-once", "cleanup_expired_otps", env=clean_env(DATABASE_URL=to_libpq(with_query(database_url, query)))
    )
    assert done.code == 0, done.stderr
    assert done.json()["success"] is True
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("keepalives_idle=30", "'keepalives_idle'"),
        ("connect_timeout=0", "'connect_timeout'"),
        ("sslmode=verify", "'sslmode'"),
        ("options=-B%20100", "'options'"),
    ],
)
def test_a_parameter_that_cannot_be_honoured_exits_2_naming_it(database_url: str, query: str, named: str) -> None:
    url = to_libpq(with_query(database_url.replace("postgres@", f"postgres:{PASSWORD}@", 1), query))
    for args in (("--run-once", "cleanup_expired_otps"), ("--check",), ()):  # () is the daemon
        done = run_cli(*args, env=clean_env(DATABASE_URL=url))
        assert done.code == 2, (args, done.stderr)
        assert named in done.stderr and "DATABASE_URL" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert PASSWORD not in done.stderr + done.stdout
