"""Setting up the demo database: the embedded server, the platform's tables and the demo data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import text

from scheduler.clock import Clock
from scheduler.db.engine import create_engine
from scheduler.demo.embedded import DEMO_DATA_DIR, DEMO_DATABASE, asyncpg_url, embedded_server
from scheduler.demo.guard import DemoAlreadyRunning, demo_lock, postmaster_pid, start_watchdog, stop_orphan
from scheduler.demo.last_night import quiet_hours_path, replay_reminder_run
from scheduler.demo.seed import (
    HELD_REFERENCE,
    create_platform_tables,
    ensure_database,
    insert_demo_data,
    reset_demo_data,
)
from scheduler.limits import PRODUCTION, Limits
from scheduler.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DemoDatabase:
    url: str
    owner: bool  # False: another demo in this folder runs the server; use it as it is, seed nothing


@contextlib.contextmanager
def demo_server(base_dir: Path | None = None) -> Iterator[DemoDatabase]:
    """Run the embedded server for the length of the block (or join the demo already running here)."""
    base = base_dir or Path.cwd()
    data_dir = base / DEMO_DATA_DIR
    try:
        with demo_lock(base / ".runtime"):
            orphan = stop_orphan(data_dir)
            if orphan is not None:
                log.warning(
                    "demo_orphan_stopped", pid=orphan, effect="a server left by a demo that was killed; starting afresh"
                )
            with embedded_server(data_dir) as uri:
                start_watchdog(data_dir)  # stops the server should we end without stopping it
                log.info("demo_database_started", data_dir=str(data_dir))
                yield DemoDatabase(asyncpg_url(uri, DEMO_DATABASE), owner=True)
            log.info("demo_database_stopped")
    except DemoAlreadyRunning as running:
        running_uri = _running_server_uri(data_dir)
        if running_uri is None:
            raise
        log.info("demo_joined", reason=str(running).split(";")[0], effect="using its database as it is")
        yield DemoDatabase(asyncpg_url(running_uri, DEMO_DATABASE), owner=False)


def _running_server_uri(data_dir: Path) -> str | None:
    """The URI of the server another demo runs on `data_dir` (read from its postmaster.pid)."""
    if postmaster_pid(data_dir) is None:
        return None
    # postmaster.pid: pid, data directory, start time, port, socket directory, ...
    lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres:@/postgres?host={socket_dir}" + (f"&port={port}" if port != "5432" else "")


async def prepare_demo_database(
    url: str, clock: Clock, *, reseed: bool = True, settings: Settings | None = None, limits: Limits = PRODUCTION
) -> None:
    """Create the demo database and its platform tables if needed; with `reseed`, lay the demo data
    afresh, dated relative to now (the same bookings every start, never more of them).

    Given the demo's `settings` with quiet hours on, the booking of the quiet-hours path is laid
    first, alone, and the daemon's reminder run is replayed for it at a moment in the latest quiet
    hours (scheduler/demo/last_night.py); the other bookings follow, so that run owes them nothing.
    """
    admin_url = url.replace(f"/{DEMO_DATABASE}?", "/postgres?", 1)
    admin = create_engine(admin_url, pool_size=1)
    try:
        await ensure_database(admin, DEMO_DATABASE)
    finally:
        await admin.dispose()
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await create_platform_tables(conn)
            if not reseed:
                return
            now = clock.now()
            path = quiet_hours_path(settings, now) if settings is not None else None
            await reset_demo_data(conn, now, held_event_date=path.event_date if path else None)
        if settings is not None and path is not None:
            replayed = await replay_reminder_run(settings, limits, path.run_at, reference=HELD_REFERENCE)
            if not replayed.success:
                log.warning("demo_quiet_hours_replay_failed", booking=HELD_REFERENCE, errors=replayed.errors)
        async with engine.begin() as conn:
            await insert_demo_data(conn, now)
            bookings = await conn.scalar(text("SELECT count(*) FROM bookings"))
        log.info("demo_data_ready", bookings=bookings, quiet_hours_path=HELD_REFERENCE if path else None)
    finally:
        await engine.dispose()
