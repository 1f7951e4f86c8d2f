"""Claiming a channel's due messages and checking them in the claiming transaction (still true,
not in the quiet hours, not suppressed), then keeping the claims alive while they are sent: what
the dispatcher may send, apart from how it sends it."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime
from uuid import UUID

import structlog

from scheduler.clock import Clock
from scheduler.db import email_batches as email_batches_db
from scheduler.db import outbox_claims
from scheduler.db import suppressions as suppressions_db
from scheduler.db.database import Database
from scheduler.db.errors import DatabaseError
from scheduler.limits import Limits
from scheduler.notify.outcomes import DeliveryReport, OutcomeRecorder
from scheduler.notify.send_time import SendTime
from scheduler.records import ClaimedDelivery
from scheduler.vocabulary import Channel

log = structlog.get_logger(__name__)


class Claims:
    """Takes, checks and renews this process's claims on due deliveries, one channel at a time."""

    def __init__(
        self,
        db: Database,
        *,
        send_time: SendTime,
        record: OutcomeRecorder,
        limits: Limits,
        clock: Clock,
        claimer: str,
        replays_email_batches: bool,
    ) -> None:
        self._db = db
        self._send_time = send_time
        self._record = record
        self._limits = limits
        self._clock = clock
        self._claimer = claimer
        self._replays_email_batches = replays_email_batches

    async def claim(
        self,
        channel: Channel,
        report: DeliveryReport,
        only_ids: Sequence[UUID] | None,
        *,
        limit: int,
        holding: set[UUID],
    ) -> tuple[list[ClaimedDelivery], str | None] | None:
        """Claim up to `limit` due deliveries of `channel` and re-check them; those to send, and the
        key of the email batch they are to be replayed as (None: a fresh claim). None when nothing is due.

        The claimed ids join `holding` (the claims `renew_while_sending` keeps alive) as soon as the
        claiming statement returns them, inside its transaction: a renewal made meanwhile waits for
        the commit and extends them then, so a claim is renewed from the moment it is made, not
        from when its request is. Those to send stay in it (their requests carry them on); the rest
        leave it once recorded."""
        now = self._clock.now()
        batch: list[ClaimedDelivery] = []
        try:
            claimed = await self._claim(channel, report, only_ids, limit=limit, now=now, holding=holding, batch=batch)
        except BaseException:
            holding.difference_update(delivery.id for delivery in batch)
            raise
        to_send = {delivery.id for delivery in claimed[0]} if claimed is not None else set()
        holding.difference_update(delivery.id for delivery in batch if delivery.id not in to_send)
        return claimed

    async def _claim(
        self,
        channel: Channel,
        report: DeliveryReport,
        only_ids: Sequence[UUID] | None,
        *,
        limit: int,
        now: datetime,
        holding: set[UUID],
        batch: list[ClaimedDelivery],
    ) -> tuple[list[ClaimedDelivery], str | None] | None:
        async with self._db.begin() as conn:
            # An email batch that may have reached Resend first, whole, to be replayed as it was.
            retried = None
            if channel is Channel.EMAIL and self._replays_email_batches:
                retried = await email_batches_db.claim_retried_batch(
                    conn, now=now, lease=self._limits.delivery_lease, claimer=self._claimer, only_ids=only_ids
                )
            batch += retried[1] if retried is not None else await outbox_claims.claim_due(
                conn,
                channel=channel.value,
                now=now,
                lease=self._limits.delivery_lease,
                claimer=self._claimer,
                limit=limit,
                only_ids=only_ids,
            )  # fmt: skip
            holding.update(delivery.id for delivery in batch)
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

    async def renew_while_sending(self, channel: Channel, sending: Collection[UUID]) -> None:
        """While sends are in flight, keep their claims alive (by the database's clock): only a
        sender that stopped renewing (its process hung or died) loses its messages to another.
        `sending` is read afresh each time: the messages whose requests are still under way."""
        every = self._limits.delivery_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                async with self._db.begin() as conn:
                    await outbox_claims.renew_claims(
                        conn, list(sending), channel=channel.value, claimer=self._claimer,
                        lease=self._limits.delivery_lease,
                    )  # fmt: skip
            except DatabaseError as exc:
                log.warning("message_claims_not_renewed", channel=channel.value, error=str(exc))
