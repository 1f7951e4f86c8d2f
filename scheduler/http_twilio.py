"""Twilio's message-status callbacks (CONTRACT §6): accepted only with a valid signature for
TWILIO_STATUS_CALLBACK_URL, recorded on the delivery they belong to, a later stage never
overwritten by an earlier one."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from aiohttp import web

from scheduler.db import outbox_owed, outbox_provider_statuses
from scheduler.db import suppressions as suppressions_db
from scheduler.db.errors import DatabaseError
from scheduler.http_endpoint import ProviderEndpoint
from scheduler.notify.fallback import OPTED_OUT_CODE, falls_back_on_status
from scheduler.vocabulary import AddressKind, Channel, SuppressionReason

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

log = structlog.get_logger(__name__)

# Twilio's message statuses; anything else is counted as "other" so a label cannot grow unbounded.
TWILIO_STATUSES = frozenset(
    {
        "accepted", "scheduled", "canceled", "queued", "sending", "sent", "failed", "delivered",
        "undelivered", "receiving", "received", "read", "partially_delivered",
    }
)  # fmt: skip


class TwilioCallbacks(ProviderEndpoint):
    """The handler of POST /api/twilio/status."""

    async def status(self, request: web.Request) -> web.Response:
        """Record a message's later status (delivered, read, failed with its error code, ...)."""
        settings = self._settings
        url, token = settings.twilio_status_callback_url, settings.twilio_auth_token
        if url is None or token is None:
            raise web.HTTPNotFound
        from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, RequestValidator, get_signature_algorithm

        if request.content_type != "application/x-www-form-urlencoded":  # how Twilio posts its callbacks
            return _callback_rejected(request, "not a form-encoded body")
        try:
            # The body is due with the request (http_guard): a sender trickling it is cut off.
            async with asyncio.timeout_at(self.guard.request_deadline(request)):
                form = await request.post()
        except TimeoutError:
            log.warning("twilio_callback_rejected", reason="body not received in time", remote=request.remote)
            raise web.HTTPRequestTimeout(headers={"Connection": "close"}) from None
        except (ValueError, LookupError):  # undecodable bytes or an unknown charset (from an unsigned sender)
            return _callback_rejected(request, "undecodable body")
        signature = request.headers.get("X-Twilio-Signature", "")
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        if not signature or not RequestValidator(token.get_secret_value()).validate(url, form, signature, algorithm):
            return _callback_rejected(request, "bad signature")

        provider_id = str(form.get("MessageSid") or form.get("SmsSid") or "")
        status = str(form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        error_code = str(form.get("ErrorCode") or "") or None
        if not provider_id or not status:
            return web.json_response({"error": "MessageSid and MessageStatus are required"}, status=400)
        try:
            async with self._db.begin() as conn:
                recorded = await outbox_provider_statuses.record_provider_status(
                    conn, provider_id=provider_id, status=status, error_code=error_code, now=self._clock.now()
                )
                fallback = await self._owe_sms(conn, recorded, provider_id, status, error_code)
                if error_code == OPTED_OUT_CODE:  # the recipient replied STOP: nothing more to this number
                    opted_out = suppressions_db.NewSuppression(
                        "", AddressKind.PHONE, SuppressionReason.OPTED_OUT, "twilio_callback", error_code, provider_id
                    )
                    if await suppressions_db.suppress_recipient_of(conn, provider_id, opted_out, now=self._clock.now()):
                        log.info("address_suppressed", reason="opted_out", source="twilio_callback",
                                 provider_id=provider_id)  # fmt: skip
        except DatabaseError as exc:
            log.warning("message_status_not_recorded", provider_id=provider_id, error=str(exc))
            return web.json_response({"error": "database unavailable"}, status=503)
        if fallback:
            log.info("sms_fallback_owed", provider_id=provider_id, status=status, code=error_code)
        self._status_recorded(recorded, provider_id=provider_id, status=status, error_code=error_code)
        return web.Response(status=204)

    async def _owe_sms(
        self,
        conn: AsyncConnection,
        recorded: outbox_provider_statuses.StatusRecorded,
        provider_id: str,
        status: str,
        error_code: str | None,
    ) -> list[UUID]:
        """A WhatsApp message reported undelivered or failed is owed as an SMS (TWILIO_SMS_FROM);
        the next delivery run sends it, once however often Twilio reports."""
        if not (
            self._settings.sms_fallback_enabled
            and recorded.applied
            and recorded.channel == Channel.WHATSAPP
            and falls_back_on_status(status, error_code)
        ):
            return []
        whatsapp = await outbox_provider_statuses.whatsapp_delivery_of(conn, provider_id)
        return await outbox_owed.owe_sms_fallbacks(conn, [whatsapp] if whatsapp else [], now=self._clock.now())

    def _status_recorded(
        self,
        recorded: outbox_provider_statuses.StatusRecorded,
        *,
        provider_id: str,
        status: str,
        error_code: str | None,
    ) -> None:
        """Log and count a status report: news is counted, a replay or a late earlier stage is not."""
        fields = {"provider_id": provider_id, "status": status, "error_code": error_code}
        if recorded.channel is None:
            log.warning("message_status_unknown_message", **fields)
        elif not recorded.applied:
            log.info("message_status_superseded", **fields)
            return
        else:
            log.info("message_status", **fields)
        self._metrics.message_status.labels(
            channel=recorded.channel or Channel.WHATSAPP, status=status if status in TWILIO_STATUSES else "other"
        ).inc()


def _callback_rejected(request: web.Request, reason: str) -> web.Response:
    log.warning("twilio_callback_rejected", reason=reason, remote=request.remote)
    return web.json_response({"error": "invalid signature"}, status=403)
