"""Which function runs each job: the one table the runner, the CLI and the scheduler look up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from scheduler.catalog import JobName
from scheduler.jobs.cleanup import (
    cleanup_expired_otps,
    cleanup_old_audit_logs,
    cleanup_old_notifications,
    cleanup_stale_bookings,
)
from scheduler.jobs.context import JobContext
from scheduler.jobs.deliver import deliver_pending_messages
from scheduler.jobs.reminders import send_booking_reminders, send_payment_reminders
from scheduler.jobs.result import JobResult

JobFunction = Callable[[JobContext, datetime], Awaitable[JobResult]]

JOB_FUNCTIONS: dict[JobName, JobFunction] = {
    JobName.CLEANUP_STALE_BOOKINGS: cleanup_stale_bookings,
    JobName.CLEANUP_OLD_NOTIFICATIONS: cleanup_old_notifications,
    JobName.CLEANUP_EXPIRED_OTPS: cleanup_expired_otps,
    JobName.CLEANUP_OLD_AUDIT_LOGS: cleanup_old_audit_logs,
    JobName.SEND_BOOKING_REMINDERS: send_booking_reminders,
    JobName.SEND_PAYMENT_REMINDERS: send_payment_reminders,
    JobName.DELIVER_PENDING_MESSAGES: deliver_pending_messages,
}
