"""Every timing and batch size in one record, with production defaults and the reason for each.

The app hands it to whatever needs it; tests build the app with second-long leases instead of
patching module constants or rewriting rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# 10 s (CONTRACT §6) is ample for any real client, which sends its request within milliseconds
# of connecting; Prometheus, load balancers and the platform's cron caller never come close.
HTTP_REQUEST_TIMEOUT_SECONDS = 10.0
# Far more than the handful of clients we serve (scrapes, probes, the cron caller, Twilio's
# callbacks), far fewer than the descriptors the unit allows (LimitNOFILE=4096), which the
# database pool, the providers' connections and the logs need too.
HTTP_MAX_CONNECTIONS = 256
# At the limit, a connection that has waited this long without a request makes room for a new
# one. Younger ones are spared: a genuine client's request follows its connect within half a
# round trip (Twilio from the US to Perth: about 120 ms). Shorter means more connections a second
# can be recycled under a flood (the limit / this = 1,024 a second) before newcomers queue.
HTTP_EVICT_IDLE_AFTER_SECONDS = 0.25
HTTP_LOG_INTERVAL_SECONDS = 60.0  # at most one summary line per interval for shed connections and library errors


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The HTTP server's limits on its clients (CONTRACT §6), with production defaults."""

    max_connections: int = HTTP_MAX_CONNECTIONS
    request_timeout_seconds: float = HTTP_REQUEST_TIMEOUT_SECONDS
    evict_idle_after_seconds: float = HTTP_EVICT_IDLE_AFTER_SECONDS
    log_interval_seconds: float = HTTP_LOG_INTERVAL_SECONDS


@dataclass(frozen=True, slots=True)
class Limits:
    """The daemon's timings (seconds unless the name says otherwise) and batch sizes."""

    # Runs: a run whose replica vanished is resumed elsewhere after its lease; renewing at a
    # third of it lets two renewals fail before it runs out; the reaper looks as often.
    run_lease_seconds: float = 60.0
    run_lease_renew_seconds: float = 20.0
    reap_seconds: float = 20.0
    # The catch-up window (CONTRACT §5): a fire missed longer ago than this is not run late.
    catch_up_window: timedelta = timedelta(hours=6)
    # A fire whose run ended in error is run again after 1, 2, 4 ... minutes, at most 30, within
    # the catch-up window (CONTRACT §5): a short outage at a daily fire time costs minutes, not a day.
    fire_retry_first_seconds: float = 60.0
    fire_retry_max_seconds: float = 1800.0

    # Deliveries: a dead sender's messages are retried after the lease; a claim holds about
    # `claim_seconds_of_work` of sending at the channel's ceiling, well inside the lease (and the
    # send-time check it makes is that much younger when the message leaves).
    delivery_lease_seconds: float = 120.0
    claim_seconds_of_work: float = 10.0
    # The next claim is made while this much sending is left of the current one (the claim and
    # its send-time check take under a second for a full claim), so the ceiling is kept busy.
    claim_ahead_seconds: float = 2.0
    # A channel's first claim in a delivery holds only this much sending, so its first request
    # leaves once that much is claimed and checked, not a full claim (1,000 emails take 0.7 s to
    # check): the next, full claim is made at once, while the first requests are sent.
    first_claim_seconds_of_work: float = 1.0
    max_claim: int = 1000
    min_claim: int = 10
    max_in_flight: int = 200  # per channel; bounds memory when a provider hangs
    in_run_attempts: int = 3  # tries of one message within a run before leaving it to a later run
    in_run_max_delay_seconds: float = 20.0  # a longer wait is left to a later run rather than held here
    # 30 s doubling to an hour, then hourly: about a day of trying before a message is given up.
    backoff_base_seconds: float = 30.0
    backoff_cap_seconds: float = 3600.0
    ambiguity_slack: timedelta = timedelta(minutes=2)  # clock skew between us and the provider
    # A message held for the quiet hours is picked up by the first deliver_pending_messages run
    # after they end (every 5 minutes by default): one whose event would be less than
    # REMINDER_MIN_LEAD_MINUTES plus this away by then is sent at once, since held it would be void.
    quiet_pickup_seconds: float = 600.0

    # Batches: each cancelling transaction also writes notices and messages for its bookings;
    # a reminder transaction is a constant number of statements for its bookings.
    cancel_batch_size: int = 100
    reminder_batch_size: int = 500

    # The process: the loop proves itself alive every heartbeat (and refreshes the next-run
    # gauges); six missed beats make /healthz answer 503. The backlog gauge is a figure
    # Prometheus scrapes every 15-60 s.
    heartbeat_seconds: float = 5.0
    health_stale_seconds: float = 30.0
    pending_gauge_seconds: float = 30.0
    # What every replica shares through the database: a pause reaches every replica within 10 s
    # (CONTRACT §3; each fire checks it as well, so a fire right after a pause is skipped), and the
    # last-success gauges follow the runs of every replica and every manual run within a minute (§7).
    pause_poll_seconds: float = 5.0
    history_gauge_seconds: float = 30.0
    # A run longer than this logs what it has done so far, and again every as long: an operator
    # watching a big cleanup or a backlog being sent sees it move.
    progress_log_seconds: float = 10.0
    # Start-up retries the database quickly at first, then every 30 s, forever.
    db_retry_first_seconds: float = 1.0
    db_retry_max_seconds: float = 30.0
    # After the shutdown timeout: time for cancelled runs to unwind, and for releasing leases
    # (which must not hang on a dead database: they expire by themselves).
    cancel_grace_seconds: float = 2.0
    release_timeout_seconds: float = 5.0

    # Email batches (EMAIL_BATCH_SIZE > 1): requests are granted this much further apart than the
    # ceiling's spacing; a batch's request leaves a few milliseconds after its grant, more or less
    # (measured: 3 ms), and at Resend's 2 a second exact spacing leaves no room for that. Costs
    # 0.2 s over 40 requests.
    email_batch_spacing_slack_seconds: float = 0.005

    # Dead-man's-switch pings (HEARTBEAT_URL_<JOB>): healthchecks.io answers in milliseconds; a
    # ping that takes longer than this is dropped. At exit, pings still out get the drain time.
    heartbeat_ping_timeout_seconds: float = 5.0
    heartbeat_ping_drain_seconds: float = 2.0

    # The operator's console: a database that has not answered in 5 s is down for a person at a
    # terminal; `--list-jobs` shows the schedule at once and the last runs only if they come in 1 s.
    console_connect_timeout_seconds: float = 5.0
    console_command_timeout_seconds: float = 10.0
    list_jobs_connect_timeout_seconds: float = 1.0

    http: ConnectionLimits = ConnectionLimits()

    @property
    def run_lease(self) -> timedelta:
        return timedelta(seconds=self.run_lease_seconds)

    @property
    def delivery_lease(self) -> timedelta:
        return timedelta(seconds=self.delivery_lease_seconds)


PRODUCTION = Limits()
