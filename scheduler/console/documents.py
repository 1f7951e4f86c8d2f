"""The console's rows as the JSON documents of CONTRACT §3 (`--json`), addresses masked, times
in UTC; the tables for a person are drawn from the same documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scheduler.db.console_messages import AuditRow, BookingRow, BookingTrail, MessageRow, NoticeRow, ReminderRow
from scheduler.db.console_queries import JobOverview, RunRow
from scheduler.redact import mask_email, mask_phone, redact_text
from scheduler.vocabulary import Channel


def iso(when: datetime | None) -> str | None:
    """UTC, as the run-once JSON writes its times: `2026-11-29T10:00:00Z`."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def masked_address(channel: str, address: str | None) -> str | None:
    """A phone number or email address as it may be shown: never in full."""
    if not address:
        return None
    return mask_email(address) if channel == Channel.EMAIL else mask_phone(address)


def clean(text: str | None, secrets: list[str]) -> str | None:
    """Free text from the database (reasons, errors): secrets removed, numbers and addresses masked."""
    return None if text is None else redact_text(text, secrets)


def _clean_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {key: _clean_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean_value(item, secrets) for item in value]
    return value


def run_document(run: RunRow, secrets: list[str]) -> dict[str, Any]:
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return {
        "runId": str(run.id),
        "job": run.job,
        "trigger": run.trigger,
        "replica": run.replica,
        "startedAt": iso(run.started_at),
        "finishedAt": iso(run.finished_at),
        "durationSeconds": round(duration, 3) if duration is not None else None,
        "outcome": run.status,
        "count": run.count,
        "counts": run.counts,
        "errors": [redact_text(error, secrets) for error in run.errors],
        "attempt": run.attempt,
    }


def running_document(run: RunRow, db_now: datetime) -> dict[str, Any]:
    lease_left = (run.lease_expires_at - db_now).total_seconds() if run.lease_expires_at else None
    return {
        "runId": str(run.id),
        "trigger": run.trigger,
        "replica": run.replica,
        "since": iso(run.started_at),
        "leaseLeftSeconds": round(lease_left, 1) if lease_left is not None else None,
    }


def job_document(
    overview: JobOverview,
    *,
    schedule: str,
    enabled: bool,
    next_run: datetime | None,
    db_now: datetime,
    secrets: list[str],
) -> dict[str, Any]:
    pause = overview.pause
    return {
        "job": overview.job,
        "schedule": schedule,
        "enabled": enabled,
        "paused": pause is not None,
        "pausedReason": clean(pause.reason, secrets) if pause else None,
        "pausedBy": pause.paused_by if pause else None,
        "pausedAt": iso(pause.paused_at) if pause else None,
        "running": [running_document(run, db_now) for run in overview.running],
        "lastRun": run_document(overview.last, secrets) if overview.last else None,
        "nextRun": iso(next_run),
    }


def message_document(message: MessageRow, secrets: list[str]) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "bookingReference": message.booking_reference,
        "kind": message.kind,
        "role": message.role,
        "channel": message.channel,
        "address": masked_address(message.channel, message.address),
        "status": message.status,
        "reason": clean(message.reason, secrets),
        "attempts": message.attempts,
        "providerId": message.provider_id,
        "providerStatus": message.provider_status,
        "providerErrorCode": message.provider_error_code,
        "eventDate": iso(message.event_date),
        "createdAt": iso(message.created_at),
        "updatedAt": iso(message.updated_at),
        "nextAttemptAt": iso(message.next_attempt_at) if message.status in ("pending", "held") else None,
        "firstFailedAt": iso(message.first_failed_at),
        "sentAt": iso(message.sent_at),
        "providerStatusAt": iso(message.provider_status_at),
        "claimedBy": message.claimed_by if message.status == "sending" else None,
    }


def _booking(booking: BookingRow | None) -> dict[str, Any] | None:
    if booking is None:
        return None
    return {
        "id": str(booking.id),
        "reference": booking.reference,
        "status": booking.status,
        "paymentStatus": booking.payment_status,
        "eventDate": iso(booking.event_date),
    }


def _reminder(reminder: ReminderRow) -> dict[str, Any]:
    return {
        "kind": reminder.kind,
        "eventDate": iso(reminder.event_date),
        "recordedAt": iso(reminder.recorded_at),
        "runId": str(reminder.run_id) if reminder.run_id else None,
    }


def _notice(notice: NoticeRow, secrets: list[str]) -> dict[str, Any]:
    return {
        "type": notice.type,
        "role": notice.role,
        "title": clean(notice.title, secrets),
        "isRead": notice.is_read,
        "createdAt": iso(notice.created_at),
    }


def _audit(row: AuditRow, secrets: list[str]) -> dict[str, Any]:
    return {
        "eventType": row.event_type,
        "action": row.action,
        "details": _clean_value(row.details, secrets),
        "at": iso(row.at),
    }


def trail_document(trail: BookingTrail, secrets: list[str]) -> dict[str, Any]:
    """`messages --booking REF --json`: the contract's `messages` (newest first), and the rest of the trail."""
    return {
        "messages": [message_document(message, secrets) for message in reversed(trail.messages)],
        "booking": _booking(trail.booking),
        "reminders": [_reminder(reminder) for reminder in trail.reminders],
        "notices": [_notice(notice, secrets) for notice in trail.notices],
        "audit": [_audit(row, secrets) for row in trail.audit],
    }
