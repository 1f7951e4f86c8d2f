"""One message tried until it is sent, failed for good, left for a later run or handed back: the
look-up before re-sending what may have gone out, the rewritten text's check, and the retries within
the run. Emails many to a request go through notify/email_batches.py instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from scheduler.clock import Clock
from scheduler.db.database import Database
from scheduler.limits import Limits
from scheduler.notify.backoff import RetryPolicy
from scheduler.notify.outcomes import DeliveryReport, OutcomeRecorder
from scheduler.notify.ratelimit import RateLimiter
from scheduler.notify.send_time import SendTime
from scheduler.notify.transport import AlreadySentError, PermanentSendError, TransientSendError, Transport
from scheduler.records import ClaimedDelivery, OutgoingMessage
from scheduler.vocabulary import Channel

log = structlog.get_logger(__name__)


class MessageSender:
    """Sends claimed deliveries one to a request, each under its channel's ceiling."""

    def __init__(
        self,
        db: Database,
        transports: dict[Channel, Transport],
        *,
        limiters: dict[Channel, RateLimiter],
        record: OutcomeRecorder,
        send_time: SendTime,
        limits: Limits,
        retries: RetryPolicy,
        clock: Clock,
        claimer: str,
    ) -> None:
        self._db = db
        self._transports = transports
        self._limiters = limiters
        self._record = record
        self._send_time = send_time
        self._limits = limits  # the slack an earlier attempt's send is looked for with
        self._retries = retries
        self._clock = clock
        self._claimer = claimer

    async def send(
        self,
        channel: Channel,
        delivery: ClaimedDelivery,
        report: DeliveryReport,
        should_stop: Callable[[], bool],
    ) -> None:
        """Try one delivery until it is sent, failed for good, deferred to a later run, or handed back."""
        message = delivery.message
        bound = log.bind(booking=delivery.booking_reference, channel=channel.value, delivery_id=str(delivery.id))
        attempt_here = 0
        while not should_stop():
            attempt_here += 1
            started = self._clock.now()
            try:
                if delivery.rewritten is not None and message is delivery.message:
                    looked_up = await self._rewritten_once_clear(channel, delivery, delivery.rewritten)
                    if isinstance(looked_up, str):
                        await self._record.sent(delivery, report, looked_up, attempt_here)
                        return
                    message = looked_up
                provider_id = await self._attempt(channel, message, should_stop)
            except AlreadySentError as exc:
                bound.info("message_found_already_sent", reason=exc.reason)
                await self._record.sent(delivery, report, None, attempt_here)
                return
            except PermanentSendError as exc:
                await self._record.failed(delivery, report, exc.reason, attempt_here, code=exc.code)
                bound.warning("message_failed", reason=exc.reason, code=exc.code)
                return
            except TransientSendError as exc:
                if exc.ambiguous and message.ambiguous_since is None:
                    message = replace(message, ambiguous_since=started)
                self._record.retried(delivery)
                if not await self._retry_now(
                    delivery, report, exc, message, attempt_here=attempt_here, should_stop=should_stop
                ):
                    return
                continue
            except Exception as exc:  # an unexpected failure must not lose the message
                bound.exception("message_send_crashed")
                later = self._retries.later(delivery.attempts + attempt_here - 1, None)
                await self._record.retry_later(
                    delivery,
                    report,
                    f"unexpected error: {type(exc).__name__}",
                    delay_seconds=later,
                    ambiguous_since=message.ambiguous_since or started,
                    tries=attempt_here,
                )
                return
            if provider_id is None:
                break  # stopping: handed back below
            await self._record.sent(delivery, report, provider_id, attempt_here)
            return
        await self._record.hand_back(delivery)

    async def _attempt(self, channel: Channel, message: OutgoingMessage, should_stop: Callable[[], bool]) -> str | None:
        """One try: the provider id, or None when the daemon began stopping while we waited for a slot."""
        transport = self._transports[channel]
        if message.ambiguous_since is not None:
            # An earlier try may have gone out without an answer: ask before sending again.
            found = await transport.find_sent(message, message.ambiguous_since - self._limits.ambiguity_slack)
            if found is not None:
                log.info("message_found_already_sent", booking=message.booking_reference, provider_id=found)
                return found
        await self._limiters[channel].acquire()
        if should_stop():  # the wait for a slot may outlast the decision to stop
            return None
        return await transport.send(message)

    async def _rewritten_once_clear(
        self, channel: Channel, delivery: ClaimedDelivery, rewritten: OutgoingMessage
    ) -> str | OutgoingMessage:
        """For a message whose stored text may have gone out in an earlier attempt and that was
        written afresh: the provider id if it did go out, else the new text, stored before it is sent."""
        message = delivery.message
        found = await self._transports[channel].find_sent(
            message, (message.ambiguous_since or self._clock.now()) - self._limits.ambiguity_slack
        )
        if found is not None:
            log.info("message_found_already_sent", booking=message.booking_reference, provider_id=found)
            return found
        fresh = replace(rewritten, ambiguous_since=message.ambiguous_since)
        async with self._db.begin() as conn:
            await self._send_time.store(conn, fresh, claimer=self._claimer)
        return fresh

    async def _retry_now(
        self,
        delivery: ClaimedDelivery,
        report: DeliveryReport,
        exc: TransientSendError,
        message: OutgoingMessage,
        *,
        attempt_here: int,
        should_stop: Callable[[], bool],
    ) -> bool:
        """After a transient failure: wait and return True to try again in this run, or record the
        outcome (left for a later run, or failed once it has failed for MESSAGE_MAX_RETRY_HOURS)
        and return False. Time decides, never a count: quick answers cannot use up the retries."""
        attempts = delivery.attempts + attempt_here - 1
        given_up = self._retries.given_up(delivery.first_failed_at, exc.reason)
        if given_up is not None:
            await self._record.failed(delivery, report, given_up, attempt_here)
            return False
        delay = self._retries.wait_here(attempt_here, exc.retry_after_seconds, should_stop)
        if delay is not None:
            log.info(
                "message_retrying", booking=delivery.booking_reference, reason=exc.reason, delay_seconds=round(delay, 2)
            )
            await self._clock.sleep(delay)
            return True
        later = self._retries.later(attempts, exc.retry_after_seconds)
        await self._record.retry_later(
            delivery,
            report,
            exc.reason,
            delay_seconds=later,
            ambiguous_since=message.ambiguous_since,
            tries=attempt_here,
        )
        log.info(
            "message_deferred", booking=delivery.booking_reference, reason=exc.reason, retry_in_seconds=round(later)
        )
        return False
