"""Sending what the outbox owes: claim under a lease, send concurrently under each channel's
ceiling, retry transient failures with backoff, and record every outcome as soon as it is known."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import structlog

from scheduler.clock import Clock
from scheduler.db import email_batches as email_batches_db
from scheduler.db import outbox as outbox_db
from scheduler.db import send_time as send_time_db
from scheduler.db import suppressions as suppressions_db
from scheduler.db.database import Database
from scheduler.db.errors import DatabaseError
from scheduler.limits import Limits
from scheduler.metrics import Metrics
from scheduler.notify.backoff import Backoff
from scheduler.notify.email_batches import EmailBatchSender
from scheduler.notify.email_batches import groups as email_groups
from scheduler.notify.lazy import LazyTransport
from scheduler.notify.outcomes import DeliveryReport, OutcomeRecorder
from scheduler.notify.ratelimit import RateLimiter
from scheduler.notify.send_time import SendTime
from scheduler.notify.transport import (
    AlreadySentError,
    BatchTransport,
    PermanentSendError,
    TransientSendError,
    Transport,
)
from scheduler.records import ClaimedDelivery, OutgoingMessage
from scheduler.vocabulary import Channel

log = structlog.get_logger(__name__)


class Dispatcher:
    """Sends owed deliveries through the transports; one per process, shared by every job."""

    def __init__(
        self,
        db: Database,
        transports: dict[Channel, Transport],
        *,
        ceilings: dict[Channel, float],
        limits: Limits,
        clock: Clock,
        metrics: Metrics,
        claimer: str,
        give_up_after: timedelta,
        send_time: SendTime,
        rng: random.Random | None = None,
        email_batch_size: int = 1,
    ) -> None:
        self._db = db
        self._transports = transports
        self._ceilings = ceilings
        self._limits = limits
        self._backoff = Backoff(limits)
        self._limiters = {channel: RateLimiter(rate, clock) for channel, rate in ceilings.items()}
        if email_batch_size > 1 and Channel.EMAIL in ceilings:
            slack = limits.email_batch_spacing_slack_seconds
            self._limiters[Channel.EMAIL] = RateLimiter(ceilings[Channel.EMAIL], clock, slack_seconds=slack)
        self._clock = clock
        self._metrics = metrics
        self._claimer = claimer
        self._give_up_after = give_up_after
        self._send_time = send_time
        self._record = OutcomeRecorder(db, metrics, clock, claimer, sms_fallback=Channel.SMS in transports)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        # EMAIL_BATCH_SIZE: due emails go many to a request where the transport can (Resend); a batch
        # that may have reached Resend is replayed whole even when the size is now 1.
        self._email_batch_size = email_batch_size
        email = transports.get(Channel.EMAIL)
        self._email_batches = (
            EmailBatchSender(
                email, limiter=self._limiters[Channel.EMAIL], record=self._record, limits=limits, clock=clock,
                give_up_after=give_up_after, rng=self._rng, store=self._store_texts,
            )
            if isinstance(email, BatchTransport) and email.batches
            else None
        )  # fmt: skip

    async def deliver(
        self, *, only_ids: Sequence[UUID] | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> DeliveryReport:
        """Send the due deliveries (or just `only_ids`), every enabled channel at once."""
        report = DeliveryReport()
        if only_ids is not None and not only_ids:
            return report
        try:
            # A task group, not gather: when one send cannot record its outcome (the database went
            # away), the others stop too instead of sending on with nowhere to write. Their
            # deliveries stay 'sending' and are resumed, checked for ambiguity, after the lease.
            async with asyncio.TaskGroup() as channels:
                for channel in self._transports:
                    channels.create_task(self._deliver_channel(channel, report, only_ids, should_stop))
            if report.sms_fallbacks and not should_stop():
                # WhatsApp refusals owed their SMS while the SMS channel may have been done: send them now.
                await self._deliver_channel(Channel.SMS, report, list(report.sms_fallbacks), should_stop)
        except ExceptionGroup as failed:
            raise _first_cause(failed) from None
        await self.refresh_pending_gauge()
        return report

    async def _store_texts(self, messages: list[OutgoingMessage]) -> None:
        async with self._db.begin() as conn:
            await send_time_db.rewrite_content(conn, messages, claimer=self._claimer)

    async def refresh_pending_gauge(self) -> None:
        async with self._db.connect() as conn:
            counts = await outbox_db.unfinished_by_channel(conn)
        for channel in Channel:
            self._metrics.messages_pending.labels(channel=channel).set(counts.get(channel.value, 0))

    def _claim_size(self, channel: Channel) -> int:
        limits = self._limits
        per_request = self._email_batch_size if channel is Channel.EMAIL and self._email_batches else 1
        work = int(self._ceilings[channel] * limits.claim_seconds_of_work * per_request)
        return max(limits.min_claim, min(limits.max_claim, work))

    async def _deliver_channel(
        self,
        channel: Channel,
        report: DeliveryReport,
        only_ids: Sequence[UUID] | None,
        should_stop: Callable[[], bool],
    ) -> None:
        in_flight = asyncio.Semaphore(self._limits.max_in_flight)
        while not should_stop():
            claimed = await self._claim(channel, report, only_ids)
            if claimed is None:
                return
            batch, replay_key = claimed
            transport = self._transports[channel]
            if isinstance(transport, LazyTransport):  # load the SDK before the first grant, not after it
                transport.build()
            renewer = asyncio.create_task(self._renew_claims(channel), name=f"claims-{channel.value}")
            try:
                async with asyncio.TaskGroup() as sends:
                    for group, key in self._requests(channel, batch, replay_key):
                        sends.create_task(
                            self._send_request(
                                channel, group, key, report, should_stop=should_stop, in_flight=in_flight
                            )
                        )
            finally:
                renewer.cancel()

    async def _claim(
        self, channel: Channel, report: DeliveryReport, only_ids: Sequence[UUID] | None
    ) -> tuple[list[ClaimedDelivery], str | None] | None:
        """Claim due deliveries of `channel` and re-check them; those to send, and the key of the
        email batch they are to be replayed as (None: a fresh claim). None when nothing is due."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            # An email batch that may have reached Resend first, whole, to be replayed as it was.
            retried = None
            if channel is Channel.EMAIL and self._email_batches is not None:
                retried = await email_batches_db.claim_retried_batch(
                    conn, now=now, lease=self._limits.delivery_lease, claimer=self._claimer, only_ids=only_ids
                )
            batch = retried[1] if retried is not None else await outbox_db.claim_due(
                conn,
                channel=channel.value,
                now=now,
                lease=self._limits.delivery_lease,
                claimer=self._claimer,
                limit=self._claim_size(channel),
                only_ids=only_ids,
            )  # fmt: skip
            # Every claimed message is re-checked against its booking as it stands now, held
            # in the quiet hours, and written afresh (notify/send_time.py) ...
            prepared = await self._send_time.prepare(conn, batch, now=now, claimer=self._claimer)
            # ... and skipped when its address is suppressed (bounced, complained, opted out).
            suppressed = await suppressions_db.skip_suppressed(
                conn, [delivery.id for delivery in prepared.ready], now=now
            )
        if not batch:
            return None
        for delivery, reason in prepared.voided:
            self._record.voided(delivery, report, reason)
        for delivery in prepared.held:
            self._record.held(delivery, report, prepared.held_until)
        for delivery, reason in prepared.unwritable:
            await self._record.failed(delivery, report, reason, 1)
        for delivery in prepared.ready:
            if delivery.id in suppressed:
                self._record.suppressed(delivery, report)
        ready = [delivery for delivery in prepared.ready if delivery.id not in suppressed]
        if retried is not None and len(ready) < len(batch):
            # Members are void, held or suppressed since: the rest keep the batch's key. Had Resend
            # accepted the first try, it refuses the smaller batch under that key (409: recorded
            # as sent); had it not, it sends it. Either way nothing goes twice.
            log.info("email_batch_changed", batch_key=retried[0], members=len(batch), remaining=len(ready))
        return ready, retried[0] if retried is not None else None

    def _requests(
        self, channel: Channel, batch: list[ClaimedDelivery], replay_key: str | None
    ) -> list[tuple[list[ClaimedDelivery], str | None]]:
        """The provider requests the claimed deliveries make: one each, or emails many to a request."""
        if replay_key is not None:
            return [(batch, replay_key)] if batch else []
        if channel is Channel.EMAIL and self._email_batches is not None and self._email_batch_size > 1:
            return [(group, None) for group in email_groups(batch, self._email_batch_size)]
        return [([delivery], None) for delivery in batch]

    async def _send_request(
        self,
        channel: Channel,
        group: list[ClaimedDelivery],
        replay_key: str | None,
        report: DeliveryReport,
        *,
        should_stop: Callable[[], bool],
        in_flight: asyncio.Semaphore,
    ) -> None:
        async with in_flight:
            if self._email_batches is not None and (replay_key is not None or len(group) > 1):
                await self._email_batches.send(group, report, should_stop, key=replay_key, replay=bool(replay_key))
            else:
                await self._send_one(channel, group[0], report, should_stop)

    async def _renew_claims(self, channel: Channel) -> None:
        """While sends are in flight, keep their claims alive (by the database's clock): only a
        sender that stopped renewing (its process hung or died) loses its messages to another."""
        every = self._limits.delivery_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                async with self._db.begin() as conn:
                    await outbox_db.renew_claims(
                        conn, channel=channel.value, claimer=self._claimer, lease=self._limits.delivery_lease
                    )
            except DatabaseError as exc:
                log.warning("message_claims_not_renewed", channel=channel.value, error=str(exc))

    async def _send_one(
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
                later = self._backoff.later(delivery.attempts + attempt_here - 1, None, self._rng)
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
        failing_since = delivery.first_failed_at or self._clock.now()
        if self._clock.now() - failing_since >= self._give_up_after:
            hours = self._give_up_after / timedelta(hours=1)
            reason = f"gave up after {hours:g} hours of transient failures: {exc.reason}"
            await self._record.failed(delivery, report, reason, attempt_here)
            return False
        delay = self._backoff.now(attempt_here, exc.retry_after_seconds, self._rng)
        if (
            attempt_here < self._limits.in_run_attempts
            and delay <= self._limits.in_run_max_delay_seconds
            and not should_stop()
        ):
            log.info(
                "message_retrying", booking=delivery.booking_reference, reason=exc.reason, delay_seconds=round(delay, 2)
            )
            await self._clock.sleep(delay)
            return True
        later = self._backoff.later(attempts, exc.retry_after_seconds, self._rng)
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


def _first_cause(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first real error inside (possibly nested) task-group failures, for the runner to report."""
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first
