"""The words every layer shares: jobs, channels, message kinds, roles, and the statuses of runs
and deliveries. The ground floor: it imports nothing of the project, so anything may import it."""

from __future__ import annotations

from enum import StrEnum


class JobName(StrEnum):
    CLEANUP_STALE_BOOKINGS = "cleanup_stale_bookings"
    CLEANUP_OLD_NOTIFICATIONS = "cleanup_old_notifications"
    CLEANUP_EXPIRED_OTPS = "cleanup_expired_otps"
    CLEANUP_OLD_AUDIT_LOGS = "cleanup_old_audit_logs"
    CLEANUP_SCHEDULER_HISTORY = "cleanup_scheduler_history"
    SEND_BOOKING_REMINDERS = "send_booking_reminders"
    SEND_PAYMENT_REMINDERS = "send_payment_reminders"
    DELIVER_PENDING_MESSAGES = "deliver_pending_messages"


class Channel(StrEnum):
    WHATSAPP = "whatsapp"
    EMAIL = "email"
    SMS = "sms"  # only as the fallback of a WhatsApp message that failed for good (TWILIO_SMS_FROM)


IN_APP = "in_app"  # the platform's own notifications table: a metric label beside the channels


class MessageKind(StrEnum):
    BOOKING_REMINDER = "booking_reminder"
    PAYMENT_REMINDER = "payment_reminder"
    BOOKING_CANCELLED = "booking_cancelled"


class Role(StrEnum):
    CLIENT = "client"
    PERFORMER = "performer"


class ReminderKind(StrEnum):
    """The `kind` label of reminders_sent_total."""

    BOOKING = "booking"
    PAYMENT = "payment"


REMINDER_KINDS: dict[MessageKind, ReminderKind] = {
    MessageKind.BOOKING_REMINDER: ReminderKind.BOOKING,
    MessageKind.PAYMENT_REMINDER: ReminderKind.PAYMENT,
}


class DeliveryStatus(StrEnum):
    """Where a delivery (one message to one recipient on one channel) stands in the outbox."""

    PENDING = "pending"  # owed; sent when next_attempt_at comes
    HELD = "held"  # owed, waiting for the quiet hours to end (next_attempt_at)
    SENDING = "sending"  # claimed by a sender under a lease
    SENT = "sent"
    FAILED = "failed"  # permanently, or transiently for longer than MESSAGE_MAX_RETRY_HOURS
    SKIPPED = "skipped"  # never to be sent: channel off, no address, opted out
    VOID = "void"  # no longer true when it was to leave (booking changed, event passed)


UNFINISHED_DELIVERIES = (DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.SENDING)


class RunStatus(StrEnum):
    """A row of the run history."""

    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL = "partial"  # did its work, but some items failed or are left retrying
    ERROR = "error"
    INTERRUPTED = "interrupted"  # closed by a manual run after its process died
    SKIPPED = "skipped"  # a scheduled fire of a paused job: recorded so that no catch-up runs it later


class Trigger(StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    CATCH_UP = "catch_up"
    MANUAL = "manual"  # --run-once
    HTTP = "http"  # /api/cron/*
    TAKE_OVER = "take_over"  # resuming a run whose replica died
    RETRY = "retry"  # a scheduled fire whose run ended in error (or could not reach the database), again


class RunOutcome(StrEnum):
    """How a run ended (the result's `outcome`, the `outcome` label of job_runs_total)."""

    SUCCESS = "success"  # no errors
    PARTIAL = "partial"  # the job did its work, but some items failed or are left retrying
    ERROR = "error"  # the run itself could not do its work (the database went away, a crash)


class SkipReason(StrEnum):
    """Why a run did not happen (job_skipped_total)."""

    ALREADY_RUNNING = "already_running"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    TABLE_MISSING = "table_missing"
    PAUSED = "paused"  # an operator paused the job (`flavor-scheduler pause JOB`)


class AddressKind(StrEnum):
    """What a suppressed address is: an email address, or a phone number (WhatsApp and SMS alike)."""

    EMAIL = "email"
    PHONE = "phone"


class SuppressionReason(StrEnum):
    """Why an address gets no more messages (CONTRACT §2, "Fallback and suppression")."""

    BOUNCED = "bounced"  # Resend: the recipient's server refused it for good
    COMPLAINED = "complained"  # Resend: the recipient marked it as spam
    OPTED_OUT = "opted_out"  # Twilio 21610: the recipient replied STOP


SUPPRESSED = "suppressed"  # the reason a delivery to a suppressed address is skipped


class MessageOutcome(StrEnum):
    """The `outcome` label of messages_total."""

    SENT = "sent"
    FAILED = "failed"
    RETRIED = "retried"
    SKIPPED = "skipped"
    HELD = "held"
    VOID = "void"


class MessageState(StrEnum):
    """How a message this run owed or sent ended the run (the result's `messages` counts)."""

    SENT = "sent"
    RETRYING = "retrying"  # a transient failure, left for a later run: an error of the run
    HELD = "held"  # quiet hours: not an error
    SKIPPED = "skipped"  # channel off, no address, opted out, suppressed: not an error
    FAILED = "failed"  # permanently: an error
    VOID = "void"  # no longer true: not an error
