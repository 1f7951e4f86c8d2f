"""Pauses live in the database: a repeated pause keeps the first, resume lifts only what was paused."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.pauses import pause, paused_jobs, resume


async def test_pause_and_resume_change_only_what_they_name(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await pause(conn, ["cleanup_expired_otps"], reason="disk full", by="ops@host") == [
            "cleanup_expired_otps"
        ]
        assert await pause(conn, ["cleanup_expired_otps", "send_booking_reminders"], reason=None, by="b@h") == [
            "send_booking_reminders"
        ]
        paused = await paused_jobs(conn)
    assert set(paused) == {"cleanup_expired_otps", "send_booking_reminders"}
    assert paused["cleanup_expired_otps"].reason == "disk full"
    assert paused["cleanup_expired_otps"].paused_by == "ops@host"
    async with engine.begin() as conn:
        assert await resume(conn, ["cleanup_expired_otps", "cleanup_old_audit_logs"]) == ["cleanup_expired_otps"]
        assert set(await paused_jobs(conn)) == {"send_booking_reminders"}
