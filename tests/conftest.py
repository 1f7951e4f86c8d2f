"""Shared fixtures: a real PostgreSQL database per test, a frozen clock, settings and the app."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App, build
from scheduler.clock import FrozenClock
from scheduler.db.engine import create_engine
from scheduler.limits import PRODUCTION, Limits
from scheduler.notify.recording import RecordingTransport
from scheduler.settings import Settings, variable_names
from scheduler.settings_typos import prefixes
from scheduler.vocabulary import Channel
from tests.database import DatabaseFactory, server_url, to_libpq
from tests.fakes.fixtures import *  # noqa: F403 - the stand-in provider fixtures

pytest_plugins = ["tests.faults.report"]

# A Sunday evening in Perth (UTC+8, no daylight saving): 2026-11-29 18:00 local.
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

# The first word of every variable the daemon reads (DATABASE, SCHEDULE, TWILIO, ...): a machine's
# variable that starts so is the daemon's, or a look-alike of one.
_SETTINGS_PREFIXES = tuple(sorted(prefixes(variable_names())))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than there are cores (`-n auto`): much of a worker's time is spent waiting
    on a subprocess or the database (measured on 2 cores: 3 workers 3:12, 2 workers 3:58, 4 no better)."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The multi-process scenarios first: spread over the workers (pytest-xdist) from the start,
    they do not leave one worker running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith(_SETTINGS_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def test_databases() -> Iterator[DatabaseFactory]:
    with server_url() as url:
        databases = DatabaseFactory(url)
        databases.create_template()
        try:
            yield databases
        finally:
            databases.drop_template()


@pytest.fixture
async def database_url(test_databases: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh database with the platform's tables and the daemon's schema (asyncpg URL)."""
    url = await test_databases.create()
    try:
        yield url
    finally:
        await test_databases.drop(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database; at the end, no connection may still be checked out."""
    engine = create_engine(database_url, pool_size=3)
    try:
        yield engine
        assert engine.pool.checkedout() == 0, "a connection was left checked out"  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Sends at any hour: tests stand at any time of day (quiet hours have their own tests).
    return Settings(_env_file=None, database_url=to_libpq(database_url), http_port=0, quiet_hours="off")


@pytest.fixture
def whatsapp() -> RecordingTransport:
    return RecordingTransport(Channel.WHATSAPP)


@pytest.fixture
def email() -> RecordingTransport:
    return RecordingTransport(Channel.EMAIL)


@contextlib.asynccontextmanager
async def recording_app(
    settings: Settings,
    clock: FrozenClock,
    whatsapp: RecordingTransport,
    email: RecordingTransport,
    *,
    limits: Limits = PRODUCTION,
) -> AsyncIterator[App]:
    """The application on the test's database, with recording transports, database prepared."""
    app = build(settings, clock=clock, transports={Channel.WHATSAPP: whatsapp, Channel.EMAIL: email}, limits=limits)
    await app.prepare_database()
    try:
        yield app
        assert app.engine.pool.checkedout() == 0, "the app left a connection checked out"  # type: ignore[attr-defined]
    finally:
        await app.aclose()


@pytest.fixture
async def app(
    settings: Settings, clock: FrozenClock, whatsapp: RecordingTransport, email: RecordingTransport
) -> AsyncIterator[App]:
    """The application on the test's database, with recording transports, database prepared."""
    async with recording_app(settings, clock, whatsapp, email) as app:
        yield app
