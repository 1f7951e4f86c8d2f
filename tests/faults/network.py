"""A TCP proxy between the daemon and PostgreSQL that can drop its connections silently.

`blackhole()` makes every connection open at that moment stop forwarding in both directions
while its sockets stay open: no FIN, no RST, and the proxy's kernel keeps acknowledging, so
neither end can tell (TCP keepalives would not either). That is a middlebox losing a flow:
a NAT or load balancer timing out, a firewall failover. Connections opened afterwards are
forwarded normally, as through the recovered path.

`silence_after(answer)` loses one flow at a chosen moment: the first connection whose server sends
`answer` from then on is silenced right after it, the answer delivered. That is a flow lost between
two round trips of one statement (its Parse answered, its Bind never arrives).

`cut()` is the plain outage: every connection is closed and new ones are closed as soon as they
arrive, until `restore()`, as a client sees a database that went away (a server stopped, a host
unreachable behind a load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url

from tests.database import to_asyncpg

CHUNK_BYTES = 65536


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class BlackholeProxy:
    """127.0.0.1:<port> forwarding to a PostgreSQL server given by a database URL."""

    def __init__(self, database_url: str) -> None:
        url = make_url(to_asyncpg(database_url))
        socket_dir = url.query.get("host")
        if isinstance(socket_dir, tuple):
            socket_dir = socket_dir[0]
        self._unix_path = f"{socket_dir}/.s.PGSQL.{url.port or 5432}" if socket_dir else None
        self._upstream = (url.host or "127.0.0.1", url.port or 5432)
        self._database_url = url
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self.silenced = 0
        self.refusing = False
        self._silence_after: bytes | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for pump in link.pumps:
                pump.cancel()
            for writer in (link.client, link.upstream):
                writer.close()
        for link in self._links:
            for pump in link.pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self) -> str:
        """The database URL, through the proxy (asyncpg form)."""
        proxied = self._database_url.set(host="127.0.0.1", port=self.port)
        proxied = proxied.difference_update_query(["host"])
        return proxied.render_as_string(hide_password=False)

    @property
    def open_links(self) -> int:
        return sum(not link.silent and not link.client.is_closing() for link in self._links)

    def blackhole(self) -> int:
        """Silence every connection open now; returns how many."""
        count = 0
        for link in self._links:
            if not link.silent and not link.client.is_closing():
                link.silent = True
                count += 1
        self.silenced += count
        return count

    def silence_after(self, answer: bytes) -> None:
        """Silence the first connection whose server sends `answer` from now on, right after it."""
        self._silence_after = answer

    def close_silenced(self) -> int:
        """The middlebox gives up on the connections it silenced: both ends closed; returns how many."""
        closed = 0
        for link in self._links:
            if link.silent and not link.upstream.is_closing():
                closed += 1
                for writer in (link.client, link.upstream):
                    writer.close()
        return closed

    def cut(self) -> int:
        """Close every connection and turn new ones away until `restore()`; returns how many were open."""
        self.refusing = True
        closed = 0
        for link in self._links:
            if not link.client.is_closing():
                closed += 1
            for writer in (link.client, link.upstream):
                writer.close()
        return closed

    def restore(self) -> None:
        """Forward new connections again."""
        self.refusing = False

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.close()
            return
        if self._unix_path:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self._unix_path)
        else:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        link = _Link(client_writer, upstream_writer)
        self._links.append(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, client_reader, upstream_writer)),
            asyncio.create_task(self._pump(link, upstream_reader, client_writer)),
        ]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                chunk = await reader.read(CHUNK_BYTES)
            except ConnectionError:
                chunk = b""
            if link.silent:
                if not chunk:
                    # The far end gave up; a lost flow tells the other end nothing. Keep its socket open.
                    await asyncio.Event().wait()
                continue  # read and dropped
            if not chunk:
                with contextlib.suppress(ConnectionError, OSError):
                    writer.close()
                return
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if writer is link.client and self._silence_after is not None and self._silence_after in chunk:
                self._silence_after = None
                link.silent = True
                self.silenced += 1
