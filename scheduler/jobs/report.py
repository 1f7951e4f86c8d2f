"""The JSON shapes of results, as the platform's old cron routes printed them (CONTRACT §3)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.jobs.catalog import GROUPS, JOBS
from scheduler.jobs.result import JobResult
from scheduler.vocabulary import MessageState


def iso(moment: datetime) -> str:
    """Timestamps in results: UTC, milliseconds, `Z` (as JavaScript's toISOString wrote them)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def messages_json(result: JobResult) -> dict[str, int]:
    """How the messages this run owed or sent ended it, every state named (0 when none)."""
    return {state.value: result.messages[state] for state in MessageState}


def result_json(result: JobResult) -> dict[str, Any]:
    """`{"job", "success", <count key>, "errors", "dryRun", "startedAt", "finishedAt", "outcome",
    "messages"}` of one run."""
    body: dict[str, Any] = {
        "job": result.job.value,
        "success": result.success,
        JOBS[result.job].count_key: result.count,
        "errors": list(result.errors),
        "dryRun": result.dry_run,
        "startedAt": iso(result.started_at),
        "finishedAt": iso(result.finished_at or result.started_at),
        "outcome": result.outcome.value,
        "messages": messages_json(result),
    }
    if result.skipped:
        body["skipped"] = result.skipped.value
    if result.interrupted:
        body["interrupted"] = True
    body.update(result.details)
    return body


def group_json(group: str, results: Sequence[JobResult], timestamp: datetime) -> dict[str, Any]:
    """`{"success", "timestamp", "summary"}` for a group run, keyed as the old routes keyed it."""
    summary: dict[str, Any] = {}
    by_job = {result.job: result for result in results}
    for job in GROUPS[group]:
        info = JOBS[job]
        result = by_job.get(job)
        entry: dict[str, Any] = {
            info.summary_count: result.count if result else 0,
            "errors": list(result.errors) if result else [f"{job.value} did not run"],
        }
        if result is not None and result.skipped:
            entry["skipped"] = result.skipped.value
        summary[info.summary_key] = entry
    success = all(result.success for result in results) and all(not entry["errors"] for entry in summary.values())
    body: dict[str, Any] = {"success": success, "timestamp": iso(timestamp), "summary": summary}
    if any(result.dry_run for result in results):
        body["dryRun"] = True
    if any(result.interrupted for result in results):
        body["interrupted"] = True
    return body
