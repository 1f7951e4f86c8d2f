"""The console's documents as tables for a person: rich draws them to the terminal's width
(wrapping long cells), in colour on a terminal and plain in a pipe, times local to TIMEZONE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

STATUS_STYLES = {
    "success": "green", "sent": "green",
    "partial": "yellow", "pending": "yellow", "held": "cyan", "sending": "cyan", "running": "cyan",
    "error": "bold red", "failed": "bold red", "interrupted": "red",
    "skipped": "dim", "void": "dim",
}  # fmt: skip
MESSAGE_STATUSES = ("pending", "held", "sending", "sent", "failed", "skipped", "void")


def local(iso_time: str | None, tz: tzinfo) -> str:
    """`2026-11-29T10:00:00Z` as `2026-11-29 18:00` in TIMEZONE."""
    if not iso_time:
        return "-"
    return datetime.fromisoformat(iso_time).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _styled(status: str | None) -> str:
    if not status:
        return "-"
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def _table(title: str | None, columns: Sequence[str], *, fixed: int = 0) -> Table:
    """A table whose first `fixed` columns never wrap (names, times); the others fold to fit."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for number, column in enumerate(columns):
        table.add_column(column, no_wrap=number < fixed, overflow="fold")
    return table


def _text(value: Any) -> str:
    from rich.markup import escape

    return "-" if value is None or value == "" else escape(str(value))


_COUNT_WORDS = {
    "cancelledCount": "cancelled",
    "deletedCount": "deleted",
    "remindersSent": "reminded",
    "messagesSent": "sent",
}


def _count(run: dict[str, Any] | None) -> str:
    if not run or not run["counts"]:
        return ""
    return ", ".join(f"{value} {_COUNT_WORDS.get(key, key)}" for key, value in run["counts"].items())


def _errors(errors: Sequence[str], limit: int = 3) -> str:
    shown = [_text(error) for error in errors[:limit]]
    more = len(errors) - limit
    return "\n".join(shown + ([f"(+{more} more)"] if more > 0 else [])) or "-"


def _state(job: dict[str, Any]) -> str:
    if not job["enabled"]:
        return "[dim]off[/]"
    state = "[bold magenta]paused[/]" if job["paused"] else "scheduled"
    return state + ("\n[cyan]running[/]" if job["running"] else "")


def _notes(job: dict[str, Any], tz: tzinfo) -> list[str]:
    """What the job's row has no room for: its pause, its runs in progress, its last run's errors."""
    lines = []
    if job["paused"]:
        reason = f": {_text(job['pausedReason'])}" if job["pausedReason"] else ""
        lines.append(f"paused since {local(job['pausedAt'], tz)} by {_text(job['pausedBy'])}{reason}")
    for run in job["running"]:
        lease = run["leaseLeftSeconds"]
        lease_text = f"lease {lease:.0f} s left" if lease is not None and lease >= 0 else "[red]lease expired[/]"
        lines.append(
            f"running ({run['trigger']}) on {_text(run['replica'])} since {local(run['since'], tz)}, {lease_text}"
        )
    last = job["lastRun"]
    if last and last["errors"]:
        lines.append("errors of its last run:\n    " + _errors(last["errors"]).replace("\n", "\n    "))
    return lines


def print_status(console: Console, document: dict[str, Any], tz: tzinfo, zone: str) -> None:
    database = document["database"]
    console.print(
        f"[bold]flavor-scheduler[/] · now {local(document['now'], tz)} {zone} · "
        f"database reachable, schema {database['revision'] or 'not migrated'}"
    )
    jobs = _table(None, ("JOB", "SCHEDULE", "STATE", "LAST RUN", "OUTCOME", "NEXT RUN"), fixed=2)
    notes: list[str] = []
    for job in document["jobs"]:
        last = job["lastRun"]
        notes += [f"[bold]{job['job']}[/] {line}" for line in _notes(job, tz)]
        jobs.add_row(
            job["job"],
            job["schedule"],
            _state(job),
            f"{local(last['finishedAt'] or last['startedAt'], tz)} {last['trigger']}" if last else "never",
            f"{_styled(last['outcome'])} {_count(last)}".rstrip() if last else "-",
            local(job["nextRun"], tz) if job["enabled"] else "-",
        )
    console.print(jobs)
    for line in notes:
        console.print(line)
    counts: dict[str, dict[str, int]] = document["messages"]
    backlog = _table(
        f"\nMessages: all unfinished, and the others owed since {local(document['messagesSince'], tz)}",
        ("CHANNEL", *(status.upper() for status in MESSAGE_STATUSES)),
        fixed=1 + len(MESSAGE_STATUSES),
    )
    for channel in sorted(counts):
        backlog.add_row(channel, *(str(counts[channel].get(status, 0)) for status in MESSAGE_STATUSES))
    if not counts:
        backlog.add_row("-", *("0" for _ in MESSAGE_STATUSES))
    console.print(backlog)


def print_runs(console: Console, runs: list[dict[str, Any]], tz: tzinfo, zone: str) -> None:
    table = _table(
        f"Runs, newest first (times in {zone})",
        ("RUN", "STARTED", "JOB", "TRIGGER", "TOOK", "OUTCOME", "REPLICA", "ERRORS"),
        fixed=3,
    )
    for run in runs:
        duration = run["durationSeconds"]
        table.add_row(
            run["runId"][:8],
            local(run["startedAt"], tz),
            run["job"],
            run["trigger"],
            f"{duration:.1f} s" if duration is not None else "-",
            f"{_styled(run['outcome'])} {_count(run)}".rstrip(),
            _text(run["replica"]),
            _errors(run["errors"]),
        )
    console.print(table if runs else "No runs.")


def _details(message: dict[str, Any], tz: tzinfo) -> str:
    parts = [_text(message["reason"])] if message["reason"] else []
    if message["nextAttemptAt"]:
        parts.append(f"next try {local(message['nextAttemptAt'], tz)}")
    if message["claimedBy"]:
        parts.append(f"by {_text(message['claimedBy'])}")
    if message["sentAt"]:
        parts.append(f"sent {local(message['sentAt'], tz)}")
    if message["providerId"]:
        code = f" {message['providerErrorCode']}" if message["providerErrorCode"] else ""
        later = f" → {_styled(message['providerStatus'])}{code}" if message["providerStatus"] else ""
        parts.append(f"{_text(message['providerId'])}{later}")
    return "\n".join(parts) or "-"


def print_messages(console: Console, messages: list[dict[str, Any]], tz: tzinfo, title: str) -> None:
    table = _table(title, ("ID", "CREATED", "BOOKING", "MESSAGE", "STATUS", "DETAILS"), fixed=2)
    for message in messages:
        tries = message["attempts"]
        table.add_row(
            message["id"][:8],
            local(message["createdAt"], tz),
            message["bookingReference"],
            f"{message['kind']}\n{message['channel']} to {message['role']}\n{_text(message['address'])}",
            f"{_styled(message['status'])}\n{tries} {'try' if tries == 1 else 'tries'}",
            _details(message, tz),
        )
    console.print(table if messages else "No messages.")


def print_trail(console: Console, document: dict[str, Any], reference: str, tz: tzinfo, zone: str) -> None:
    booking = document["booking"]
    if booking:
        console.print(
            f"[bold]Booking {_text(reference)}[/]: {_text(booking['status'])}, "
            f"payment {_text(booking['paymentStatus'])}, event {local(booking['eventDate'], tz)} (times in {zone})"
        )
    else:
        console.print(
            f"[bold]Booking {_text(reference)}[/]: not in the platform's bookings (deleted?) (times in {zone})"
        )
    reminders = _table("\nReminders recorded (one per kind and event date)", ("KIND", "EVENT DATE", "RECORDED", "RUN"))
    for reminder in document["reminders"]:
        reminders.add_row(
            reminder["kind"],
            local(reminder["eventDate"], tz),
            local(reminder["recordedAt"], tz),
            (reminder["runId"] or "-")[:8],
        )
    console.print(reminders if document["reminders"] else "No reminders recorded.")
    print_messages(console, list(reversed(document["messages"])), tz, "\nMessages, oldest first")
    notices = _table("\nIn-app notices", ("CREATED", "TYPE", "TO", "TITLE", "READ"))
    for notice in document["notices"]:
        notices.add_row(
            local(notice["createdAt"], tz),
            _text(notice["type"]),
            _text(notice["role"]),
            _text(notice["title"]),
            "yes" if notice["isRead"] else "no",
        )
    console.print(notices if document["notices"] else "No in-app notices.")
    audit = _table("\nAudit rows", ("AT", "EVENT", "ACTION", "DETAILS"))
    for row in document["audit"]:
        details = ", ".join(f"{key}={value}" for key, value in row["details"].items())
        audit.add_row(local(row["at"], tz), _text(row["eventType"]), _text(row["action"]), _text(details))
    console.print(audit if document["audit"] else "No audit rows.")


def print_suppressions(console: Console, found: list[dict[str, Any]], tz: tzinfo) -> None:
    table = _table(
        "Suppressed addresses, newest first: no message goes to them",
        ("ADDRESS", "KIND", "REASON", "SOURCE", "DETAIL", "SINCE"),
        fixed=2,
    )
    for entry in found:
        table.add_row(
            entry["address"], entry["kind"], entry["reason"], entry["source"], _text(entry["detail"]),
            local(entry["suppressedAt"], tz),
        )  # fmt: skip
    console.print(table if found else "No suppressed addresses.")
