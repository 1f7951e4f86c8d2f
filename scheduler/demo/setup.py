"""Setting up the demo database: the embedded server, the platform's tables and a round of sample data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import structlog
from sqlalchemy import text

from scheduler.clock import Clock
from scheduler.db.engine import create_engine
from scheduler.demo.embedded import DEMO_DATA_DIR, DEMO_DATABASE, asyncpg_url, embedded_server
from scheduler.demo.seed import create_platform_tables, ensure_database, insert_demo_round

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def demo_server(base_dir: Path | None = None) -> Iterator[str]:
    """Run the embedded server for the length of the block; yield the demo database's URL."""
    data_dir = (base_dir or Path.cwd()) / DEMO_DATA_DIR
    with embedded_server(data_dir) as uri:
        log.info("demo_database_started", data_dir=str(data_dir))
        yield asyncpg_url(uri, DEMO_DATABASE)


async def prepare_demo_database(url: str, clock: Clock, *, add_sample_round: bool = True) -> None:
    """Create the demo database and its platform tables if needed, then add fresh sample bookings."""
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
            if not add_sample_round:
                return
            round_no = await insert_demo_round(conn, clock.now())
            bookings = await conn.scalar(text("SELECT count(*) FROM bookings"))
        log.info("demo_data_added", round=round_no, bookings_in_database=bookings)
    finally:
        await engine.dispose()
