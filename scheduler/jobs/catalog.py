"""The job table: one record per job (name, default schedule, function, result keys, group,
the optional tables it needs). Settings, the schedule, the metrics, `--list-jobs` and the groups
follow from it: a new job is its record here, its module and its queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import TYPE_CHECKING, cast

from scheduler import cron
from scheduler.vocabulary import JobName

if TYPE_CHECKING:  # the table itself loads nothing: `--help` and `--list-jobs` stay quick
    from scheduler.jobs.context import JobContext
    from scheduler.jobs.result import JobResult
    from scheduler.settings import Settings

JobFunction = Callable[["JobContext", datetime], Awaitable["JobResult"]]

CLEANUP, REMINDERS = "cleanup", "reminders"


@dataclass(frozen=True, slots=True)
class Job:
    """Everything the daemon knows of one job."""

    name: JobName
    default_schedule: str
    module: str  # scheduler.jobs.<module> holds the job's function, named after the job
    count_key: str  # the key of the result JSON (CONTRACT §3)
    summary_key: str  # the key inside a group's summary
    summary_count: str  # the count's name inside that summary entry
    group: str | None  # `cleanup`, `reminders`, or None (only in `all`)
    needs_tables: tuple[str, ...] = ()  # optional platform tables; missing: the run skips (table_missing)

    @property
    def run(self) -> JobFunction:
        """The job's function (imported on first use)."""
        return cast("JobFunction", getattr(import_module(f"scheduler.jobs.{self.module}"), self.name.value))


JOBS: dict[JobName, Job] = {
    job.name: job
    for job in (
        Job(JobName.CLEANUP_STALE_BOOKINGS, "0 2 * * *", "cleanup",
            "cancelledCount", "staleBookings", "cancelled", CLEANUP),
        Job(JobName.CLEANUP_OLD_NOTIFICATIONS, "0 2 * * *", "cleanup",
            "deletedCount", "notifications", "deleted", CLEANUP),
        Job(JobName.CLEANUP_EXPIRED_OTPS, "0 2 * * *", "cleanup",
            "deletedCount", "otps", "deleted", CLEANUP, ("otp_codes",)),
        Job(JobName.CLEANUP_OLD_AUDIT_LOGS, "0 2 * * *", "cleanup",
            "deletedCount", "auditLogs", "deleted", CLEANUP, ("audit_logs",)),
        Job(JobName.CLEANUP_SCHEDULER_HISTORY, "30 2 * * *", "history_cleanup",
            "deletedCount", "schedulerHistory", "deleted", CLEANUP),
        Job(JobName.SEND_BOOKING_REMINDERS, "0 * * * *", "reminders",
            "remindersSent", "bookingReminders", "sent", REMINDERS),
        Job(JobName.SEND_PAYMENT_REMINDERS, "0 * * * *", "reminders",
            "remindersSent", "paymentReminders", "sent", REMINDERS),
        Job(JobName.DELIVER_PENDING_MESSAGES, "*/5 * * * *", "deliver",
            "messagesSent", "pendingMessages", "sent", None),
    )
}  # fmt: skip

# `all` is every job in the table's order: the cleanups, the reminders, then the deliveries.
GROUPS: dict[str, tuple[JobName, ...]] = {
    CLEANUP: tuple(name for name, job in JOBS.items() if job.group == CLEANUP),
    REMINDERS: tuple(name for name, job in JOBS.items() if job.group == REMINDERS),
    "all": tuple(JOBS),
}


def schedule_for(settings: Settings, job: JobName) -> str:
    """The job's cron expression (SCHEDULE_<JOB>, else its default), or 'off'."""
    return settings.schedule_override(job) or JOBS[job].default_schedule


def enabled_schedules(settings: Settings) -> dict[JobName, str]:
    """Each enabled job's cron expression, in the table's order; jobs set to `off` are left out."""
    schedules = {job: schedule_for(settings, job) for job in JOBS}
    return {job: expression for job, expression in schedules.items() if expression != cron.OFF}


def valid_targets() -> list[str]:
    """Every name `--run-once` accepts: the jobs, then the groups."""
    return [*(job.value for job in JOBS), *GROUPS]


def resolve_target(name: str) -> tuple[JobName, ...] | None:
    """The jobs a `--run-once` name stands for, or None when the name is unknown."""
    if name in GROUPS:
        return GROUPS[name]
    try:
        return (JobName(name),)
    except ValueError:
        return None
