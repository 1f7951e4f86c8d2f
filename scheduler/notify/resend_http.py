"""The Resend SDK's HTTP client: one pooled aiohttp session, telling a request that never left
from one that may have reached Resend.

The SDK's own async client (httpx) opens a connection per call; aiohttp is already the daemon's
HTTP library (its server, Twilio's SDK), so email needs no second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
from resend.exceptions import ResendError
from resend.http_client_async import AsyncHTTPClient


class NetworkError(ResendError):
    """A request that got no HTTP answer. A ResendError, so the SDK passes it through as is."""

    def __init__(self, reason: str, *, request_sent: bool) -> None:
        super().__init__(code=500, error_type="network_error", message=reason, suggested_action="retry")
        self.request_sent = request_sent


async def _on_headers_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    context.trace_request_ctx.headers_sent = True


class PooledAiohttpClient(AsyncHTTPClient):
    """The SDK's async HTTP interface (`resend.default_async_http_client`) on one aiohttp session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def request(  # noqa: PLR0917 - the SDK's AsyncHTTPClient signature
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if files is not None:
            raise NetworkError("attachments are not sent by this daemon", request_sent=False)
        if self._session is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_request_headers_sent.append(_on_headers_sent)
            # No timeout of aiohttp's own: the transport bounds each whole call (asyncio.timeout),
            # and its TimeoutError is what says "no answer" (the request may have reached Resend).
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), trace_configs=[tracing])
        progress = SimpleNamespace(headers_sent=False)
        try:
            async with self._session.request(
                method, url, headers=dict(headers), json=json if data is None else None, data=data,
                trace_request_ctx=progress,
            ) as response:  # fmt: skip
                return await response.read(), response.status, response.headers
        except aiohttp.ClientError as exc:
            name = type(exc).__name__
            if progress.headers_sent:  # Resend may have it
                raise NetworkError(f"connection to Resend failed ({name})", request_sent=True) from exc
            raise NetworkError(f"cannot connect to Resend ({name})", request_sent=False) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
