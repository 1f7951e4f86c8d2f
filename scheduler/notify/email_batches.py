"""Emails many to a request (EMAIL_BATCH_SIZE, Resend's /emails/batch), each still exactly once.

A batch's Idempotency-Key is derived from its members, so the same batch carries the same key on
every try, in any process. Its members carry the key in the outbox (`batch_key`) from before the
first request until the answer is recorded: an attempt that may have reached Resend (a 5xx, a
timeout, a dropped connection, a sender killed mid-request) is retried as the very same batch, and
Resend answers the replay with the first ids instead of sending again. A batch Resend refuses as invalid
(strict validation: one bad address refuses all) is split in halves until the bad one fails alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from scheduler.clock import Clock
from scheduler.notify.backoff import RetryPolicy
from scheduler.notify.outcomes import DeliveryReport, OutcomeRecorder
from scheduler.notify.ratelimit import RateLimiter
from scheduler.notify.transport import AlreadySentError, BatchTransport, PermanentSendError, TransientSendError
from scheduler.records import ClaimedDelivery, OutgoingMessage

log = structlog.get_logger(__name__)

VALIDATION_ERROR = "validation_error"  # Resend's name for a request with an invalid email in it


def batch_key(group: Sequence[ClaimedDelivery]) -> str:
    """The Idempotency-Key of a batch: the same members give the same key, whoever sends them."""
    members = ",".join(sorted(str(delivery.id) for delivery in group))
    return "batch-" + hashlib.sha256(members.encode()).hexdigest()[:40]


def groups(batch: Sequence[ClaimedDelivery], size: int) -> list[list[ClaimedDelivery]]:
    """The claimed emails cut into batches of at most `size`, oldest first."""
    return [list(batch[start : start + size]) for start in range(0, len(batch), size)]


class EmailBatchSender:
    """Sends one batch until its members are sent, failed, left for a later run, or handed back."""

    def __init__(
        self,
        transport: BatchTransport,
        *,
        limiter: RateLimiter,
        record: OutcomeRecorder,
        retries: RetryPolicy,
        clock: Clock,
        store: Callable[[list[OutgoingMessage]], Awaitable[None]],
    ) -> None:
        self._store = store  # writes the texts a batch is about to be sent with
        self._transport = transport
        self._limiter = limiter
        self._record = record
        self._retries = retries
        self._clock = clock

    async def send(
        self,
        group: list[ClaimedDelivery],
        report: DeliveryReport,
        should_stop: Callable[[], bool],
        *,
        key: str | None = None,
        replay: bool = False,
    ) -> None:
        """Send `group` under `key` (derived from its members when None). `replay`: an earlier try
        of this very batch may have reached Resend, so it stays this batch whatever happens now."""
        key = key or batch_key(group)
        # A replayed batch's text may have been written afresh since (notify/send_time.py): stored
        # before it goes, and sent under the same key: Resend refuses it (409) if it had the first
        # try, and sends it if not, so nothing goes twice either way.
        fresh = [delivery.rewritten for delivery in group if delivery.rewritten is not None]
        messages = [delivery.rewritten or delivery.message for delivery in group]
        if fresh:
            await self._store(fresh)
        if not replay:
            await self._record.sending_batch(group, key)  # a sender killed mid-request leaves it to be replayed
        attempt_here = 0
        while not should_stop():
            attempt_here += 1
            await self._limiter.acquire()  # one grant per request: the ceiling counts requests
            if should_stop():
                break
            try:
                provider_ids: Sequence[str | None] = await self._transport.send_batch(messages, key)
            except AlreadySentError as exc:
                log.info("message_found_already_sent", channel="email", batch_size=len(group), reason=exc.reason)
                provider_ids = [None] * len(group)
            except PermanentSendError as exc:
                if exc.code == VALIDATION_ERROR and len(group) > 1:
                    # Nothing was sent: find the invalid one(s) by halves, each half its own batch.
                    log.info("email_batch_narrowed", size=len(group), reason=exc.reason)
                    half = len(group) // 2
                    for part in (group[:half], group[half:]):
                        await self.send(part, report, should_stop)
                    return
                await self._record.failed_batch(group, report, exc.reason, attempt_here)
                log.warning("message_failed", channel="email", batch_size=len(group), reason=exc.reason, code=exc.code)
                return
            except TransientSendError as exc:
                replay = replay or exc.ambiguous
                if not await self._retry_now(group, report, exc, key, replay=replay, attempt_here=attempt_here,
                                             should_stop=should_stop):  # fmt: skip
                    return
                continue
            except Exception as exc:  # an unexpected failure must not lose the messages, nor send them twice
                log.exception("message_send_crashed", channel="email", batch_size=len(group))
                attempts = max(delivery.attempts for delivery in group) + attempt_here - 1
                await self._record.retry_batch_later(
                    group, report, f"unexpected error: {type(exc).__name__}",
                    delay_seconds=self._retries.later(attempts, None), batch_key=key, tries=attempt_here,
                )  # fmt: skip
                return
            await self._record.sent_batch(group, report, provider_ids, attempt_here)
            return
        await self._record.hand_back_batch(group, tried=replay)

    async def _retry_now(
        self,
        group: list[ClaimedDelivery],
        report: DeliveryReport,
        exc: TransientSendError,
        key: str,
        *,
        replay: bool,
        attempt_here: int,
        should_stop: Callable[[], bool],
    ) -> bool:
        """As for one message (message_sender._retry_now), for a whole batch: wait and try again here,
        or leave it for a later run (as this batch under this key when it may have reached Resend),
        or fail it once it has failed for MESSAGE_MAX_RETRY_HOURS."""
        for delivery in group:
            self._record.retried(delivery)
        failing_since = min((d.first_failed_at for d in group if d.first_failed_at is not None), default=None)
        given_up = self._retries.given_up(failing_since, exc.reason)
        if given_up is not None:
            await self._record.failed_batch(group, report, given_up, attempt_here)
            return False
        delay = self._retries.wait_here(attempt_here, exc.retry_after_seconds, should_stop)
        if delay is not None:
            log.info("message_retrying", channel="email", batch_size=len(group), reason=exc.reason,
                     delay_seconds=round(delay, 2))  # fmt: skip
            await self._clock.sleep(delay)
            return True
        attempts = max(delivery.attempts for delivery in group) + attempt_here - 1
        later = self._retries.later(attempts, exc.retry_after_seconds)
        await self._record.retry_batch_later(
            group, report, exc.reason, delay_seconds=later, batch_key=key if replay else None, tries=attempt_here
        )
        log.info("message_deferred", channel="email", batch_size=len(group), reason=exc.reason,
                 retry_in_seconds=round(later), same_batch=replay)  # fmt: skip
        return False
