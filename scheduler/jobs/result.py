"""A job's result, and the JSON shapes the platform's old cron routes used (CONTRACT §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler.catalog import GROUPS, JOBS, JobName


def iso(moment: datetime) -> str:
    """Timestamps in results: UTC, milliseconds, `Z` (as JavaScript's toISOString wrote them)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class JobResult:
    """What one run of a job did."""

    job: JobName
    started_at: datetime
    finished_at: datetime | None = None
    count: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    skipped: str | None = None  # a reason when the job did not run (e.g. table_missing)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job": self.job.value,
            "success": self.success,
            JOBS[self.job].count_key: self.count,
            "errors": list(self.errors),
            "dryRun": self.dry_run,
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at or self.started_at),
        }
        if self.skipped:
            body["skipped"] = self.skipped
        body.update(self.details)
        return body


# A dry run did nothing: its counts say what a real run would do, under keys that say so.
DRY_RUN_COUNTS = {"cancelled": "wouldCancel", "deleted": "wouldDelete", "sent": "wouldSend"}


def group_json(group: str, results: Sequence[JobResult], timestamp: datetime) -> dict[str, Any]:
    """`{"success", "timestamp", "summary"}` for a group run, keyed as the old routes keyed it.

    In a dry run each entry counts under `wouldCancel`, `wouldDelete` or `wouldSend` instead,
    with what the job's own dry run lists (`bookings`: the references it would cancel or remind).
    """
    summary: dict[str, Any] = {}
    by_job = {result.job: result for result in results}
    for job in GROUPS[group]:
        info = JOBS[job]
        result = by_job.get(job)
        dry_run = result is not None and result.dry_run
        count_key = DRY_RUN_COUNTS[info.summary_count] if dry_run else info.summary_count
        entry: dict[str, Any] = {
            count_key: result.count if result else 0,
            "errors": list(result.errors) if result else [f"{job.value} did not run"],
        }
        if result is not None and dry_run:
            entry.update(result.details)
        if result is not None and result.skipped:
            entry["skipped"] = result.skipped
        summary[info.summary_key] = entry
    success = all(not entry["errors"] for entry in summary.values())
    body: dict[str, Any] = {"success": success, "timestamp": iso(timestamp), "summary": summary}
    if any(result.dry_run for result in results):
        body["dryRun"] = True
    return body
