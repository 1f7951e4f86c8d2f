"""Every Prometheus metric of the daemon (CONTRACT §7), built on an injected registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics

from scheduler import __version__
from scheduler.records import OwedDelivery
from scheduler.vocabulary import (
    IN_APP,
    Channel,
    JobName,
    MessageKind,
    MessageOutcome,
    ReminderKind,
    RunOutcome,
    SkipReason,
)

PREFIX = "flavor_scheduler"
LAST_SUCCESS = f"{PREFIX}_job_last_success_timestamp_seconds"
LAST_ERROR = f"{PREFIX}_job_last_error_timestamp_seconds"


class Finishes(Protocol):
    """A job's last finishes, as the run history tells them."""

    @property
    def success(self) -> datetime | None: ...
    @property
    def error(self) -> datetime | None: ...


# The later statuses Twilio's callbacks and Resend's webhook report (others are counted as they come).
PROVIDER_STATUSES = ("sent", "delivered", "read", "undelivered", "failed")
EMAIL_STATUSES = ("delivered", "delivery_delayed", "bounced", "complained")

# Jobs range from milliseconds (an empty cleanup) to many minutes (a large backlog of messages).
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class Metrics:
    """The metric objects, with every job's and channel's series created at zero."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        # No `_created` series beside each counter and histogram: CONTRACT §7 lists what we export,
        # and the extra series only double what dashboards and alert rules must ignore.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = registry
        p = PREFIX
        self.job_runs = Counter(f"{p}_job_runs", "Job runs by outcome.", ["job_name", "outcome"], registry=registry)
        self.job_skipped = Counter(
            f"{p}_job_skipped", "Job runs skipped, by reason.", ["job_name", "reason"], registry=registry
        )
        self.job_duration = Histogram(
            f"{p}_job_duration_seconds",
            "Wall-clock duration of job runs.",
            ["job_name"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.job_running = Gauge(
            f"{p}_job_running",
            "1 while a run of the job is in progress in this process.",
            ["job_name"],
            registry=registry,
        )
        self.job_last_success = Gauge(
            LAST_SUCCESS,
            "Unix time of the job's last successful run (any replica, seeded from the run history).",
            ["job_name"],
            registry=registry,
        )
        self.job_last_error = Gauge(
            LAST_ERROR,
            "Unix time at which the job's last run ending in error finished (any replica, any trigger, "
            "from the run history; 0 when none).",
            ["job_name"],
            registry=registry,
        )
        self.job_paused = Gauge(
            f"{p}_job_paused",
            "1 while the job is paused (flavor-scheduler pause; read from the database by every replica).",
            ["job_name"],
            registry=registry,
        )
        self.job_next_run = Gauge(
            f"{p}_job_next_run_timestamp_seconds",
            "Unix time of the job's next scheduled run (0 when disabled).",
            ["job_name"],
            registry=registry,
        )
        self.job_errors = Counter(
            f"{p}_job_errors",
            "Errors reported by job runs (one per failed item or batch).",
            ["job_name"],
            registry=registry,
        )
        self.rows_deleted = Counter(
            f"{p}_rows_deleted", "Rows deleted by the cleanup jobs.", ["job_name", "table"], registry=registry
        )
        self.bookings_cancelled = Counter(f"{p}_bookings_cancelled", "Stale bookings cancelled.", registry=registry)
        self.reminders_sent = Counter(
            f"{p}_reminders_sent",
            "Reminders delivered, by kind and channel.",
            ["kind", "channel"],
            registry=registry,
        )
        self.messages = Counter(
            f"{p}_messages",
            "Message delivery attempts by outcome.",
            ["channel", "kind", "outcome"],
            registry=registry,
        )
        self.messages_pending = Gauge(
            f"{p}_messages_pending",
            "Messages owed and not yet delivered (pending or sending; held for quiet hours not counted).",
            ["channel"],
            registry=registry,
        )
        self.message_status = Counter(
            f"{p}_message_status",
            "Later message statuses reported by provider callbacks.",
            ["channel", "status"],
            registry=registry,
        )
        self.provider_request_duration = Histogram(
            f"{p}_provider_request_duration_seconds",
            "Duration of calls to Twilio and Resend.",
            ["provider", "outcome"],
            buckets=_PROVIDER_BUCKETS,
            registry=registry,
        )
        self.build_info = Gauge(f"{p}_build_info", "The running version.", ["version"], registry=registry)
        self.build_info.labels(version=version).set(1)
        # 0 until the database answers and the schema is migrated: a replica that waits for its
        # database looks healthy (up == 1, /healthz 200) and only this tells the alert rules.
        self.ready = Gauge(f"{p}_ready", "1 when /readyz would answer 200.", registry=registry)
        # process_* (CPU, memory, open files against their limit): the injected registry does not
        # get prometheus_client's default collectors.
        ProcessCollector(registry=registry)
        self._last_finish: dict[tuple[str, str], float] = {}  # (gauge, job) -> what the gauge shows
        self._seed()

    def _seed(self) -> None:
        for job in JobName:
            for outcome in RunOutcome:
                self.job_runs.labels(job_name=job, outcome=outcome)
            for reason in SkipReason:
                self.job_skipped.labels(job_name=job, reason=reason)
            self.job_duration.labels(job_name=job)
            self.job_running.labels(job_name=job).set(0)
            self.job_last_success.labels(job_name=job)
            self.job_last_error.labels(job_name=job)
            self.job_paused.labels(job_name=job).set(0)
            self.job_next_run.labels(job_name=job)
            self.job_errors.labels(job_name=job)
        for job, table in (
            (JobName.CLEANUP_OLD_NOTIFICATIONS, "notifications"),
            (JobName.CLEANUP_EXPIRED_OTPS, "otp_codes"),
            (JobName.CLEANUP_OLD_AUDIT_LOGS, "audit_logs"),
            (JobName.CLEANUP_SCHEDULER_HISTORY, "job_runs"),
            (JobName.CLEANUP_SCHEDULER_HISTORY, "deliveries"),
        ):
            self.rows_deleted.labels(job_name=job, table=table)
        for reminder in ReminderKind:
            for channel in (*Channel, IN_APP):
                self.reminders_sent.labels(kind=reminder, channel=channel)
        reported = [(Channel.WHATSAPP, s) for s in PROVIDER_STATUSES] + [(Channel.EMAIL, s) for s in EMAIL_STATUSES]
        for channel, status in reported:
            self.message_status.labels(channel=channel, status=status)
        for provider in ("twilio", "resend"):
            for provider_outcome in ("success", "transient_error", "permanent_error"):
                self.provider_request_duration.labels(provider=provider, outcome=provider_outcome)
        for channel in Channel:
            self.messages_pending.labels(channel=channel).set(0)
            for kind in MessageKind:
                for message_outcome in MessageOutcome:
                    self.messages.labels(channel=channel, kind=kind, outcome=message_outcome)

    @classmethod
    def unregistered(cls) -> Metrics:
        """Metrics on a private registry, for one-off commands whose numbers nobody scrapes."""
        return cls(CollectorRegistry(), __version__)

    def set_ready(self, ready: bool) -> None:
        """Follow readiness (CONTRACT §7: 1 exactly when /readyz would answer 200)."""
        self.ready.set(1 if ready else 0)

    def finished(self, job_name: str, *, failed: bool, at: datetime) -> None:
        """A run ended (here, or anywhere as the run history tells): the last-success gauge moves on
        a run that did its work, the last-error gauge on one that ended in error. Never back."""
        gauge = self.job_last_error if failed else self.job_last_success
        key = (LAST_ERROR if failed else LAST_SUCCESS, job_name)
        if at.timestamp() > self._last_finish.get(key, 0.0):
            self._last_finish[key] = at.timestamp()
            gauge.labels(job_name=job_name).set(at.timestamp())

    def follow_history(self, finishes: Mapping[str, Finishes]) -> None:
        """Move the last-success and last-error gauges to the run history's (every replica, every
        manual run); a run of this process whose row could not be written stays seen."""
        for job_name, last in finishes.items():
            if last.success is not None:
                self.finished(job_name, failed=False, at=last.success)
            if last.error is not None:
                self.finished(job_name, failed=True, at=last.error)

    def show_paused(self, paused: Iterable[str]) -> None:
        """job_paused: 1 for the paused jobs, 0 for every other."""
        names = set(paused)
        for job in JobName:
            self.job_paused.labels(job_name=job).set(1 if job.value in names else 0)

    def count_recorded(self, settled: Iterable[OwedDelivery]) -> None:
        """Count messages finished as they were recorded: skipped (channel off) or failed (bad address)."""
        for row in settled:
            self.messages.labels(channel=row.channel, kind=row.kind, outcome=MessageOutcome(row.status.value)).inc()

    def observe_provider_request(self, provider: str, outcome: str, seconds: float) -> None:
        """The transports' callback for each provider call."""
        self.provider_request_duration.labels(provider=provider, outcome=outcome).observe(seconds)
