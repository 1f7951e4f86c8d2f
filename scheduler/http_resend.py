"""Resend's webhook (CONTRACT §6): Svix-signed events, verified with `standardwebhooks` (the
Standard Webhooks reference implementation, which Svix's signatures follow), recorded on the
delivery they are about, bounced and complained addresses suppressed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from aiohttp import web

from scheduler.db import outbox_provider_statuses
from scheduler.db import suppressions as suppressions_db
from scheduler.db.errors import DatabaseError
from scheduler.http_endpoint import ProviderEndpoint
from scheduler.redact import mask_email
from scheduler.vocabulary import AddressKind, Channel, SuppressionReason

log = structlog.get_logger(__name__)

# The events recorded, and the later status each stands for (ranked in db/outbox_provider_statuses.STATUS_RANKS).
EMAIL_EVENTS = {
    "email.delivered": "delivered",
    "email.delivery_delayed": "delivery_delayed",
    "email.bounced": "bounced",
    "email.complained": "complained",
}
SUPPRESSING = {"bounced": SuppressionReason.BOUNCED, "complained": SuppressionReason.COMPLAINED}


class ResendWebhook(ProviderEndpoint):
    """The handler of POST /api/resend/webhook."""

    async def receive(self, request: web.Request) -> web.Response:
        """Verify an event, record it, suppress the address it bounced from or was complained about."""
        secret = self._settings.resend_webhook_secret
        if secret is None:
            raise web.HTTPNotFound
        try:
            async with asyncio.timeout_at(self.guard.request_deadline(request)):
                body = await request.read()
        except TimeoutError:
            log.warning("resend_webhook_rejected", reason="body not received in time", remote=request.remote)
            raise web.HTTPRequestTimeout(headers={"Connection": "close"}) from None
        refused = _verify(secret.get_secret_value(), body, request.headers)
        if refused is not None:
            log.warning("resend_webhook_rejected", reason=refused, remote=request.remote)
            return web.json_response({"error": "invalid signature"}, status=403)
        try:
            event = json.loads(body)
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        return await self._record(event)

    async def _record(self, event: Any) -> web.Response:
        kind = event.get("type") if isinstance(event, dict) else None
        data = event.get("data") if isinstance(event, dict) else None
        status = EMAIL_EVENTS.get(str(kind))
        if status is None or not isinstance(data, dict):
            log.info("resend_webhook_ignored", type=str(kind)[:64])  # opened, clicked, …: acknowledged only
            return web.Response(status=204)
        email_id = str(data.get("email_id") or "")
        if not email_id:
            return web.json_response({"error": "data.email_id is required"}, status=400)
        detail = _detail(status, data)
        try:
            async with self._db.begin() as conn:
                recorded = await outbox_provider_statuses.record_provider_status(
                    conn, provider_id=email_id, status=status, error_code=detail, now=self._clock.now()
                )
                new = 0
                if status in SUPPRESSING:
                    new = await suppressions_db.suppress(
                        conn, _suppressions(status, data, email_id, detail), now=self._clock.now()
                    )
        except DatabaseError as exc:
            log.warning("message_status_not_recorded", provider_id=email_id, error=str(exc))
            return web.json_response({"error": "database unavailable"}, status=503)  # Resend retries
        fields = {"provider_id": email_id, "status": status, "error_code": detail}
        if new:
            log.info("address_suppressed", reason=status, source="resend_webhook", count=new,
                     to=[mask_email(str(address)) for address in _recipients(data)])  # fmt: skip
        if recorded.channel is None:
            log.warning("message_status_unknown_message", **fields)
        elif not recorded.applied:
            log.info("message_status_superseded", **fields)
            return web.Response(status=204)
        else:
            log.info("message_status", **fields)
        self._metrics.message_status.labels(channel=Channel.EMAIL, status=status).inc()
        return web.Response(status=204)


def _verify(secret: str, body: bytes, headers: Any) -> str | None:
    """Why the event is refused (bad or missing signature, a timestamp more than 5 minutes off),
    or None when Resend signed it. The library reads Standard Webhooks' header names; Svix's carry
    the same values under its own."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    names = ("id", "timestamp", "signature")
    found = {f"webhook-{name}": headers.get(f"svix-{name}") or headers.get(f"webhook-{name}") or "" for name in names}
    try:
        Webhook(secret).verify(body, found)
    except WebhookVerificationError as exc:
        return str(exc)
    except (ValueError, TypeError):  # a malformed signature list, undecodable bytes
        return "malformed signature"
    return None


def _recipients(data: dict[str, Any]) -> list[str]:
    to = data.get("to")
    addresses = to if isinstance(to, list) else [to] if to else []
    return [str(address) for address in addresses if address]


def _detail(status: str, data: dict[str, Any]) -> str | None:
    """The bounce type (Permanent, Transient, …) where Resend gives one."""
    bounce = data.get("bounce")
    if status == "bounced" and isinstance(bounce, dict):
        kind = bounce.get("type") or bounce.get("subType")
        return str(kind)[:64] if kind else None
    return None


def _suppressions(
    status: str, data: dict[str, Any], email_id: str, detail: str | None
) -> list[suppressions_db.NewSuppression]:
    return [
        suppressions_db.NewSuppression(
            address,
            AddressKind.EMAIL,
            SUPPRESSING[status],
            source="resend_webhook",
            detail=detail,
            provider_message_id=email_id,
        )
        for address in _recipients(data)
    ]
