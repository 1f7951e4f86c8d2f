"""The HTTP server's listening socket, guarded (CONTRACT §6): at most a bounded number of
connections, each given a fixed time to deliver its request, and no log line per connection.

aiohttp's sites hand the socket to asyncio's accept loop, which accepts until the process runs
out of descriptors and then logs every failed accept: 4,100 idle clients under LimitNOFILE=4096
stopped /healthz and the jobs and wrote 834,141 error lines. Here our own loop accepts, only
while there is room; at the limit it makes room by closing the connection that has waited
longest without sending a request, or leaves newcomers in the kernel's backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from scheduler.http_log import RateLimitFilter, Tally
from scheduler.limits import ConnectionLimits

log = structlog.get_logger(__name__)

ACCEPT_BACKLOG = 128  # connections the kernel queues while we are at the limit
ACCEPT_RETRY_SECONDS = 1.0  # after a failed accept (out of descriptors or memory), before trying again


class _Connection:
    """One accepted connection: since when it has been waiting for a request (None while one is
    in hand) and the timer that closes it if the request does not arrive in time."""

    __slots__ = ("deadline", "handler", "served", "waiting_since")

    def __init__(self, handler: web.RequestHandler, now: float) -> None:
        self.handler = handler
        self.waiting_since: float | None = now
        self.deadline: asyncio.TimerHandle | None = None
        self.served = 0  # requests it has delivered


class _GuardedHandler(web.RequestHandler):
    """aiohttp's handler, telling the guard when its connection opens and closes."""

    __slots__ = ("_guard",)

    def __init__(self, guard: Guard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._guard.closed(self)


def _shed_order(connection: _Connection) -> tuple[bool, float]:
    return connection.served > 0, connection.waiting_since or 0.0


def _report_end(task: asyncio.Task[None]) -> None:
    """An accept loop ends only when stopped; anything else is an error worth a line."""
    if not task.cancelled() and task.exception() is not None:
        log.error("http_accept_stopped", task=task.get_name(), error=repr(task.exception()))


_DEADLINE = web.RequestKey("guard_request_deadline", float)


class Guard:
    """Accepts connections for an aiohttp server within ConnectionLimits; see the module docstring."""

    def __init__(self, limits: ConnectionLimits, handler_kwargs: dict[str, Any]) -> None:
        self.limits = limits
        self._handler_kwargs = dict(handler_kwargs)
        self._connections: dict[web.RequestHandler, _Connection] = {}
        self._room = asyncio.Event()
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._stopped = False
        self._tally = Tally(limits.log_interval_seconds)
        self.logger = logging.getLogger("aiohttp.server.guarded")  # aiohttp's handlers log here
        self._log_filter = RateLimitFilter(limits.log_interval_seconds)
        self.shed = 0  # connections closed to make room
        self.timed_out = 0  # connections closed because their request did not arrive in time

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self, server: web.Server, host: str, port: int) -> int:
        """Listen on host:port (every address the name has) and accept for `server`; returns the port."""
        self.logger.addFilter(self._log_filter)
        loop = asyncio.get_running_loop()
        addresses = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
        )
        bound_port = port
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], bound_port, *address[2:]))
                sock.listen(ACCEPT_BACKLOG)
                sock.setblocking(False)
            except OSError:
                sock.close()
                await self.stop()
                raise
            bound_port = sock.getsockname()[1]  # HTTP_PORT=0: every address gets the port the first got
            self._sockets.append(sock)
        for sock in self._sockets:
            task = asyncio.create_task(self._accept(sock, server), name=f"http-accept-{sock.fileno()}")
            task.add_done_callback(_report_end)
            self._accepting.append(task)
        return bound_port

    async def stop(self) -> None:
        """Stop accepting and close the listening sockets; open connections are aiohttp's to finish."""
        self._stopped = True
        for task in self._accepting:
            task.cancel()
        for task in self._accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._accepting.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for connection in self._connections.values():
            if connection.deadline is not None:
                connection.deadline.cancel()
        self.logger.removeFilter(self._log_filter)

    # The accept loop -----------------------------------------------------------------------

    async def _accept(self, sock: socket.socket, server: web.Server) -> None:
        loop = asyncio.get_running_loop()
        factory = functools.partial(self._new_handler, server)
        while True:
            await self._make_room()
            try:
                accepted, _ = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: wait, and say so once an interval
                self._note("accept_failed", error=exc.strerror or type(exc).__name__)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            try:
                await loop.connect_accepted_socket(factory, accepted)
            except OSError:  # the client already went away
                accepted.close()
            except Exception as exc:  # one connection's failure must never end the accept loop
                accepted.close()
                self._note("connection_failed", error=type(exc).__name__)

    def _new_handler(self, server: web.Server) -> web.RequestHandler:
        return _GuardedHandler(
            self, server, loop=asyncio.get_running_loop(), logger=self.logger, **self._handler_kwargs
        )

    async def _make_room(self) -> None:
        """Return once there is room for one more connection, shedding a long-idle one if need be."""
        loop = asyncio.get_running_loop()
        while len(self._connections) >= self.limits.max_connections:
            now = loop.time()
            ripe_at = now + self.limits.evict_idle_after_seconds  # when the youngest waiting one would be ripe
            victim: _Connection | None = None
            for connection in self._connections.values():
                if connection.waiting_since is None:
                    continue  # a request in hand
                ripe_at = min(ripe_at, connection.waiting_since + self.limits.evict_idle_after_seconds)
                if now - connection.waiting_since < self.limits.evict_idle_after_seconds:
                    continue
                # First what never sent a request (a slow-loris), then what is kept alive between
                # requests; the longest waiting of each.
                if victim is None or _shed_order(connection) < _shed_order(victim):
                    victim = connection
            if victim is not None:
                self.shed += 1
                self._note("shed", open_connections=len(self._connections))
                self._close(victim)
                continue
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(ripe_at - now, 0.0)):
                    await self._room.wait()

    # Connection and request state ----------------------------------------------------------

    def opened(self, handler: web.RequestHandler) -> None:
        connection = _Connection(handler, asyncio.get_running_loop().time())
        self._connections[handler] = connection
        self._arm(connection)

    def closed(self, handler: web.RequestHandler) -> None:
        connection = self._connections.pop(handler, None)
        if connection is not None and connection.deadline is not None:
            connection.deadline.cancel()
        self._room.set()

    def _close(self, connection: _Connection) -> None:
        """Close now and forget it (connection_lost follows on the next loop turn)."""
        self._connections.pop(connection.handler, None)
        if connection.deadline is not None:
            connection.deadline.cancel()
        connection.handler.force_close()

    def _arm(self, connection: _Connection) -> None:
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None
        if self._stopped:
            return
        connection.deadline = asyncio.get_running_loop().call_later(
            self.limits.request_timeout_seconds, self._deadline_passed, connection
        )

    def _deadline_passed(self, connection: _Connection) -> None:
        connection.deadline = None
        if connection.waiting_since is None:
            return  # a request in hand: handlers bound their own body reads (request_deadline)
        # Idle, or its headers trickle in. One that never completed a request is worth counting;
        # closing a kept-alive connection between requests is ordinary.
        if connection.served == 0:
            self.timed_out += 1
            self._note("timed_out", open_connections=len(self._connections))
        self._close(connection)

    def request_deadline(self, request: web.BaseRequest) -> float:
        """The loop time by which the request's body must have arrived (for handlers that read one)."""
        deadline: float | None = request.get(_DEADLINE)
        if deadline is None:  # not a request of ours (a test server)
            return asyncio.get_running_loop().time() + self.limits.request_timeout_seconds
        return deadline

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Mark the connection busy while a request is in hand; afterwards its next request is due in time."""
        connection = self._connections.get(request.protocol)
        if connection is None:  # closed meanwhile, or a request of a server without a guard
            return await handler(request)
        loop = asyncio.get_running_loop()
        # The whole request, body included, is due within the timeout of the moment we began waiting for it.
        request[_DEADLINE] = (connection.waiting_since or loop.time()) + self.limits.request_timeout_seconds
        connection.waiting_since = None
        connection.served += 1
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None
        try:
            return await handler(request)
        finally:
            if request.protocol in self._connections:
                connection.waiting_since = loop.time()
                self._arm(connection)
                self._room.set()  # the accept loop may be waiting for a connection it can shed

    def _note(self, what: str, **fields: Any) -> None:
        counts = self._tally.add(what)
        if counts is not None:
            log.warning(
                "http_connections_limited",
                counts=counts,
                interval_seconds=self.limits.log_interval_seconds,
                max_connections=self.limits.max_connections,
                request_timeout_seconds=self.limits.request_timeout_seconds,
                **fields,
            )
