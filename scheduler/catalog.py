"""The job table: every job's name, default schedule, result key and group, as plain data.

Settings, the CLI, the scheduler and the metrics all read this one table, so a job is
added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobName(StrEnum):
    CLEANUP_STALE_BOOKINGS = "cleanup_stale_bookings"
    CLEANUP_OLD_NOTIFICATIONS = "cleanup_old_notifications"
    CLEANUP_EXPIRED_OTPS = "cleanup_expired_otps"
    CLEANUP_OLD_AUDIT_LOGS = "cleanup_old_audit_logs"
    SEND_BOOKING_REMINDERS = "send_booking_reminders"
    SEND_PAYMENT_REMINDERS = "send_payment_reminders"
    DELIVER_PENDING_MESSAGES = "deliver_pending_messages"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the outside world knows of a job: its schedule and how its result is named."""

    name: JobName
    default_schedule: str
    count_key: str  # the key of the result JSON (CONTRACT §3)
    summary_key: str  # the key inside a group's summary
    summary_count: str  # the count's name inside that summary entry


JOBS: dict[JobName, JobInfo] = {
    info.name: info
    for info in (
        JobInfo(JobName.CLEANUP_STALE_BOOKINGS, "0 2 * * *", "cancelledCount", "staleBookings", "cancelled"),
        JobInfo(JobName.CLEANUP_OLD_NOTIFICATIONS, "0 2 * * *", "deletedCount", "notifications", "deleted"),
        JobInfo(JobName.CLEANUP_EXPIRED_OTPS, "0 2 * * *", "deletedCount", "otps", "deleted"),
        JobInfo(JobName.CLEANUP_OLD_AUDIT_LOGS, "0 2 * * *", "deletedCount", "auditLogs", "deleted"),
        JobInfo(JobName.SEND_BOOKING_REMINDERS, "0 * * * *", "remindersSent", "bookingReminders", "sent"),
        JobInfo(JobName.SEND_PAYMENT_REMINDERS, "0 * * * *", "remindersSent", "paymentReminders", "sent"),
        JobInfo(JobName.DELIVER_PENDING_MESSAGES, "*/5 * * * *", "messagesSent", "pendingMessages", "sent"),
    )
}

CLEANUP_GROUP: tuple[JobName, ...] = (
    JobName.CLEANUP_STALE_BOOKINGS,
    JobName.CLEANUP_OLD_NOTIFICATIONS,
    JobName.CLEANUP_EXPIRED_OTPS,
    JobName.CLEANUP_OLD_AUDIT_LOGS,
)
REMINDERS_GROUP: tuple[JobName, ...] = (
    JobName.SEND_BOOKING_REMINDERS,
    JobName.SEND_PAYMENT_REMINDERS,
)

GROUPS: dict[str, tuple[JobName, ...]] = {
    "cleanup": CLEANUP_GROUP,
    "reminders": REMINDERS_GROUP,
    "all": (*CLEANUP_GROUP, *REMINDERS_GROUP, JobName.DELIVER_PENDING_MESSAGES),
}


def valid_targets() -> list[str]:
    """Every name `--run-once` accepts: the jobs, then the groups."""
    return [*(job.value for job in JobName), *GROUPS]


def resolve_target(name: str) -> tuple[JobName, ...] | None:
    """The jobs a `--run-once` name stands for, or None when the name is unknown."""
    if name in GROUPS:
        return GROUPS[name]
    try:
        return (JobName(name),)
    except ValueError:
        return None
