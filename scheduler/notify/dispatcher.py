"""Sending what the outbox owes: per channel, claim a batch (notify/claiming.py), then send its
requests concurrently under the channel's ceiling, one message each (notify/message_sender.py) or
emails many to one (notify/email_batches.py), until nothing is due or the daemon stops."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from uuid import UUID

from scheduler.clock import Clock
from scheduler.db import outbox_counts
from scheduler.db import send_time as send_time_db
from scheduler.db.database import Database
from scheduler.limits import Limits
from scheduler.metrics import Metrics
from scheduler.notify.backoff import RetryPolicy
from scheduler.notify.claiming import Claims
from scheduler.notify.email_batches import EmailBatchSender
from scheduler.notify.email_batches import groups as email_groups
from scheduler.notify.lazy import LazyTransport
from scheduler.notify.message_sender import MessageSender
from scheduler.notify.outcomes import DeliveryReport, OutcomeRecorder
from scheduler.notify.ratelimit import RateLimiter
from scheduler.notify.send_time import SendTime
from scheduler.notify.transport import BatchTransport, Transport
from scheduler.records import ClaimedDelivery, OutgoingMessage
from scheduler.vocabulary import Channel


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
        self._limiters = {channel: RateLimiter(rate, clock) for channel, rate in ceilings.items()}
        if email_batch_size > 1 and Channel.EMAIL in ceilings:
            slack = limits.email_batch_spacing_slack_seconds
            self._limiters[Channel.EMAIL] = RateLimiter(ceilings[Channel.EMAIL], clock, slack_seconds=slack)
        self._metrics = metrics
        self._claimer = claimer
        self._send_time = send_time
        self._record = OutcomeRecorder(db, metrics, clock, claimer, sms_fallback=Channel.SMS in transports)
        retries = RetryPolicy(
            limits,
            clock,
            give_up_after=give_up_after,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not security
        )
        # EMAIL_BATCH_SIZE: due emails go many to a request where the transport can (Resend); a batch
        # that may have reached Resend is replayed whole even when the size is now 1.
        self._email_batch_size = email_batch_size
        email = transports.get(Channel.EMAIL)
        self._email_batches = (
            EmailBatchSender(
                email, limiter=self._limiters[Channel.EMAIL], record=self._record, retries=retries, clock=clock,
                store=self._store_texts,
            )
            if isinstance(email, BatchTransport) and email.batches
            else None
        )  # fmt: skip
        self._claims = Claims(
            db, send_time=send_time, record=self._record, limits=limits, clock=clock, claimer=claimer,
            replays_email_batches=self._email_batches is not None,
        )  # fmt: skip
        self._one_message = MessageSender(
            db, transports, limiters=self._limiters, record=self._record, send_time=send_time, limits=limits,
            retries=retries, clock=clock, claimer=claimer,
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
            counts = await outbox_counts.unfinished_by_channel(conn)
        for channel in Channel:
            self._metrics.messages_pending.labels(channel=channel).set(counts.get(channel.value, 0))

    def _claim_size(self, channel: Channel, *, first: bool) -> int:
        limits = self._limits
        per_request = self._email_batch_size if channel is Channel.EMAIL and self._email_batches else 1
        seconds = limits.first_claim_seconds_of_work if first else limits.claim_seconds_of_work
        work = int(self._ceilings[channel] * seconds * per_request)
        return max(limits.min_claim, min(limits.max_claim, work))

    async def _deliver_channel(
        self,
        channel: Channel,
        report: DeliveryReport,
        only_ids: Sequence[UUID] | None,
        should_stop: Callable[[], bool],
    ) -> None:
        """Claim and send until nothing is due. The next claim is made while the last
        `claim_ahead_seconds` of the current one are still being sent, so the channel never waits
        on its own claims; a claim that fails lets the sends in flight finish and be recorded."""
        in_flight = asyncio.Semaphore(self._limits.max_in_flight)
        ahead = max(1, int(self._ceilings[channel] * self._limits.claim_ahead_seconds))  # requests
        transport = self._transports[channel]
        backlog = _Backlog()
        claim_error: Exception | None = None
        renewer = asyncio.create_task(
            self._claims.renew_while_sending(channel, backlog.sending), name=f"claims-{channel.value}"
        )
        try:
            async with asyncio.TaskGroup() as sends:
                first = True
                while not should_stop():
                    try:
                        limit = self._claim_size(channel, first=first)
                        claimed = await self._claims.claim(
                            channel, report, only_ids, limit=limit, holding=backlog.sending
                        )
                    except Exception as exc:  # raised below, once the sends in flight are done
                        claim_error = exc
                        break
                    if claimed is None:
                        break
                    batch, replay_key = claimed
                    first = False
                    if isinstance(transport, LazyTransport):  # load the SDK before the first grant, not after it
                        transport.build()
                    for group, key in self._requests(channel, batch, replay_key):
                        backlog.track(
                            sends.create_task(
                                self._send_request(
                                    channel, group, key, report, should_stop=should_stop, in_flight=in_flight
                                )
                            ),
                            [delivery.id for delivery in group],
                        )
                    await backlog.down_to(ahead)
        finally:
            renewer.cancel()
        if claim_error is not None:
            raise claim_error

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
                await self._one_message.send(channel, group[0], report, should_stop)


class _Backlog:
    """The requests of a channel not yet done, the messages they carry (the claims still to renew:
    one whose request ended, its outcome written or not, is no longer ours to keep), and a wait
    until at most so many requests are left."""

    def __init__(self) -> None:
        self._left = 0
        self._changed = asyncio.Event()
        self.sending: set[UUID] = set()

    def track(self, task: asyncio.Task[None], ids: Sequence[UUID]) -> None:
        self._left += 1
        self.sending.update(ids)
        task.add_done_callback(functools.partial(self._done, ids))

    def _done(self, ids: Sequence[UUID], _task: asyncio.Task[None]) -> None:
        self._left -= 1
        self.sending.difference_update(ids)
        self._changed.set()

    async def down_to(self, left: int) -> None:
        while self._left > left:
            self._changed.clear()
            await self._changed.wait()


def _first_cause(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first real error inside (possibly nested) task-group failures, for the runner to report."""
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first
