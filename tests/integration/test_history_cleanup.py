"""cleanup_scheduler_history against a real PostgreSQL: the daemon's own data at the boundaries of
MESSAGE_RETENTION_DAYS (30) and RUN_HISTORY_RETENTION_DAYS (90), in batches of DELETE_BATCH_SIZE;
never a run in progress, never a message still owed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.app import App
from scheduler.jobs.catalog import GROUPS
from scheduler.jobs.report import group_json, result_json
from scheduler.jobs.result import JobResult
from scheduler.vocabulary import JobName, Trigger
from tests.conftest import NOW
from tests.factories import execute, fetch, scalar

JOB = JobName.CLEANUP_SCHEDULER_HISTORY
DAYS = timedelta(days=1)
PHONE = "+61412345678"


async def add_delivery(engine: AsyncEngine, *, status: str, settled: datetime, channel: str = "whatsapp") -> UUID:
    """A message of booking FE-RET whose last change (its settling, for a finished one) was `settled`."""
    delivery_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.deliveries (id, dedupe_key, booking_id, booking_reference, kind, "
                "recipient_role, channel, address, subject, body_text, body_html, content_variables, status, "
                "attempts, provider_message_id, last_error, created_at, updated_at) VALUES (:id, :key, :booking, "
                "'FE-RET', 'booking_reminder', 'client', :channel, :address, 'Your booking', 'Hi Alice, 7 pm at "
                "12 Hay St', '<p>Hi Alice</p>', CAST(:variables AS jsonb), :status, 1, 'SM123', NULL, :at, :at)"
            ),
            {
                "id": delivery_id,
                "key": f"key-{delivery_id}",
                "booking": uuid4(),
                "channel": channel,
                "address": PHONE if channel == "whatsapp" else "alice@example.com",
                "variables": json.dumps({"1": "Alice"}),
                "status": status,
                "at": settled,
            },
        )
    return delivery_id


async def add_run(engine: AsyncEngine, *, status: str, started: datetime, finished: datetime | None) -> UUID:
    run_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, trigger, status, replica_id, started_at, "
                "finished_at, lease_expires_at) VALUES (:id, 'cleanup_expired_otps', :slot, 'schedule', :status, "
                "'elsewhere:1:abc', :started, :finished, :lease)"
            ),
            {
                "id": run_id,
                "slot": str(run_id),
                "status": status,
                "started": started,
                "finished": finished,
                "lease": NOW + timedelta(minutes=1) if status == "running" else None,
            },
        )
    return run_id


async def run(app: App, *, dry_run: bool = False) -> JobResult:
    return await app.runner.run(JOB, trigger=Trigger.MANUAL, dry_run=dry_run)


def with_batch_size(app: App, size: int) -> None:
    app.runner.deps = replace(app.runner.deps, settings=app.settings.model_copy(update={"delete_batch_size": size}))


async def deliveries(engine: AsyncEngine) -> dict[UUID, Any]:
    rows = await fetch(
        engine,
        "SELECT id, status, booking_reference, provider_message_id, address, subject, body_text, body_html, "
        "content_variables, updated_at FROM flavor_scheduler.deliveries",
    )
    return {row.id: row for row in rows}


async def test_messages_and_runs_at_the_retention_boundaries(app: App, engine: AsyncEngine) -> None:
    settled_29 = await add_delivery(engine, status="sent", settled=NOW - 29 * DAYS)
    settled_31 = {
        status: await add_delivery(engine, status=status, settled=NOW - 31 * DAYS, channel="email")
        for status in ("sent", "failed", "skipped", "void")
    }
    settled_89 = await add_delivery(engine, status="sent", settled=NOW - 89 * DAYS)
    for status in ("sent", "void"):
        await add_delivery(engine, status=status, settled=NOW - 91 * DAYS)
    # Still owed, however old: never touched.
    owed = [await add_delivery(engine, status=status, settled=NOW - 100 * DAYS) for status in ("pending", "held")]
    sending = await add_delivery(engine, status="sending", settled=NOW - 100 * DAYS)
    run_89 = await add_run(engine, status="success", started=NOW - 89 * DAYS, finished=NOW - 89 * DAYS)
    run_91 = [
        await add_run(engine, status=status, started=NOW - 91 * DAYS, finished=NOW - 91 * DAYS)
        for status in ("success", "error", "skipped")
    ]
    # Started long ago and still going (a run whose lease is renewed): never deleted.
    running = await add_run(engine, status="running", started=NOW - 200 * DAYS, finished=None)

    would = await run(app, dry_run=True)
    assert (would.count, would.details) == (
        5,
        {"messagesDeleted": 2, "messagesBlanked": 5, "runsDeleted": 3},
    )
    assert len(await deliveries(engine)) == 11  # the dry run changed nothing

    result = await run(app)

    assert result.success, result.errors
    body = result_json(result)
    assert body["deletedCount"] == 5
    assert (body["messagesDeleted"], body["messagesBlanked"], body["runsDeleted"]) == (2, 5, 3)
    after = await deliveries(engine)
    assert set(after) == {settled_29, *settled_31.values(), settled_89, *owed, sending}
    for kept in (settled_29, *owed, sending):
        assert after[kept].address is not None, after[kept].status
        assert after[kept].body_text == "Hi Alice, 7 pm at 12 Hay St"
    for blanked in (*settled_31.values(), settled_89):
        row = after[blanked]
        assert (row.address, row.subject, row.body_text, row.body_html, row.content_variables) == (
            None, None, "", None, None,
        )  # fmt: skip
        # What the history needs stays: status, booking, provider id, and when it settled.
        assert (row.booking_reference, row.provider_message_id) == ("FE-RET", "SM123")
    assert {status: after[delivery_id].status for status, delivery_id in settled_31.items()} == {
        status: status for status in settled_31
    }
    assert after[settled_89].updated_at == NOW - 89 * DAYS  # blanking is no change of status: deleted on time
    runs = {row.id for row in await fetch(engine, "SELECT id FROM flavor_scheduler.job_runs")}
    assert runs >= {run_89, running}
    assert not runs & set(run_91)
    assert (
        app.registry.get_sample_value(
            "flavor_scheduler_rows_deleted_total", {"job_name": JOB.value, "table": "deliveries"}
        )
        == 2
    )
    assert (
        app.registry.get_sample_value(
            "flavor_scheduler_rows_deleted_total", {"job_name": JOB.value, "table": "job_runs"}
        )
        == 3
    )

    again = await run(app)
    assert (again.count, again.details["messagesBlanked"]) == (0, 0)  # a blanked message is not blanked twice


async def add_old_history(engine: AsyncEngine) -> None:
    """2,345 runs past the history's retention and 1,234 settled messages past the text's."""
    old = NOW - 100 * DAYS
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.job_runs (id, job_name, slot, trigger, status, replica_id, started_at, "
                "finished_at) SELECT gen_random_uuid(), 'send_booking_reminders', 'slot-' || g, 'schedule', 'success', "
                "'r:1:a', :old, :old FROM generate_series(1, 2345) g"
            ),
            {"old": old},
        )
        await conn.execute(
            text(
                "INSERT INTO flavor_scheduler.deliveries (id, dedupe_key, booking_id, booking_reference, kind, "
                "recipient_role, channel, address, body_text, status, attempts, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'k-' || g, gen_random_uuid(), 'FE-' || g, 'booking_reminder', 'client', "
                "'email', 'a@example.com', 'text', CASE WHEN g % 2 = 0 THEN 'sent' ELSE 'failed' END, 1, :at, :at "
                "FROM generate_series(1, 1234) g"
            ),
            # Past the text's retention, not the history's: blanked, kept.
            {"at": NOW - 40 * DAYS},
        )


async def test_history_deleted_in_batches_each_its_own_transaction(app: App, engine: AsyncEngine) -> None:
    # Tables without statistics: every batch found exactly (`jobs/batch_ranges.py`).
    for table in ("job_runs", "deliveries"):
        await execute(engine, f"ALTER TABLE flavor_scheduler.{table} SET (autovacuum_enabled = false)")
    await add_old_history(engine)
    with_batch_size(app, 500)

    result = await run(app)

    assert result.success, result.errors
    assert (result.count, result.details["runsDeleted"], result.details["messagesBlanked"]) == (2345, 2345, 1234)
    # One pass over deliveries that deletes nothing, ceil(1234 / 500) to blank, ceil(2345 / 500) to
    # delete runs: each batch its own transaction.
    assert result.details["batches"] == 1 + 3 + 5
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.job_runs") == 1  # this run's own row
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE address IS NULL") == 1234


async def test_history_in_ranges_sized_by_density_is_deleted_and_blanked_all_the_same(
    app: App, engine: AsyncEngine
) -> None:
    await add_old_history(engine)
    for table in ("job_runs", "deliveries"):
        await execute(engine, f"ANALYZE flavor_scheduler.{table}")
    with_batch_size(app, 500)

    result = await run(app)

    assert result.success, result.errors
    assert (result.count, result.details["runsDeleted"], result.details["messagesBlanked"]) == (2345, 2345, 1234)
    # Sized ranges aim at 90 % of a batch: more of them than the 1 + 3 + 5 exact batches.
    assert result.details["batches"] > 1 + 3 + 5
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.job_runs") == 1
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE address IS NULL") == 1234
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries WHERE body_text <> ''") == 0
    again = await run(app)
    assert (again.count, again.details["messagesBlanked"]) == (0, 0)


def test_it_is_the_cleanup_group_s_last_job_with_its_summary_key() -> None:
    assert GROUPS["cleanup"][-1] is JOB
    result = JobResult(JOB, started_at=NOW, finished_at=NOW, count=7)
    assert group_json("cleanup", [result], NOW)["summary"]["schedulerHistory"] == {"deleted": 7, "errors": []}


async def test_a_batch_the_database_refuses_ends_the_run_in_error(app: App, engine: AsyncEngine) -> None:
    await add_delivery(engine, status="sent", settled=NOW - 100 * DAYS)
    old_run = await add_run(engine, status="success", started=NOW - 100 * DAYS, finished=NOW - 100 * DAYS)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION keep_deliveries() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'deliveries are kept'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER keep BEFORE DELETE ON flavor_scheduler.deliveries "
                "FOR EACH ROW EXECUTE FUNCTION keep_deliveries()"
            )
        )

    result = await run(app)

    assert result_json(result)["outcome"] == "error"
    (error,) = result.errors
    assert error.startswith("deleting from deliveries failed after 0 rows: ")
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.deliveries") == 1
    # The later steps did not run either: the next run does them, once the cause is gone.
    assert await scalar(engine, "SELECT count(*) FROM flavor_scheduler.job_runs WHERE id = :id", id=old_run) == 1
