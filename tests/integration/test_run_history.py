"""The run history seeds the last-success gauge at start (CONTRACT §7), from any replica's runs."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from tests.conftest import NOW


async def test_last_success_gauge_is_seeded_from_the_history(app: App, engine: AsyncEngine) -> None:
    finished = NOW - timedelta(hours=3)
    async with engine.begin() as conn:
        for status, at in (("success", finished - timedelta(days=1)), ("success", finished), ("error", NOW)):
            await conn.execute(
                text(
                    "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, trigger, status, replica_id, "
                    "started_at, finished_at) VALUES (:id, 'cleanup_expired_otps', :slot, 'schedule', :status, "
                    "'other-replica', :at, :at)"
                ),
                {"id": uuid4(), "slot": at.isoformat(), "status": status, "at": at},
            )

    def last_success(job: str) -> float | None:
        return app.registry.get_sample_value("flavor_scheduler_job_last_success_timestamp_seconds", {"job_name": job})

    assert last_success("cleanup_expired_otps") == 0

    await app.prepare_database()

    assert last_success("cleanup_expired_otps") == finished.timestamp()  # the latest success, not the later error
    assert last_success("cleanup_old_audit_logs") == 0
