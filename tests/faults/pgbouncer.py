"""PgBouncer (the Debian package) in transaction pooling mode in front of the test's PostgreSQL.

One process per test session, on a free local port, with a generated ini: `auth_type = any`
(every client logs in as the server's `postgres`, whatever name and password it gives), a
small server pool so that many client connections share few server connections, and
`max_prepared_statements` left at its default (0 on 1.21+, absent before): PgBouncer does not
track prepared statements, as in most deployments, so a client that relies on one surviving
from one transaction to the next fails loudly.

It reaches a TCP server at its host and port, and the embedded server through the Unix socket
folder named by the URL's `host=`. PgBouncer refuses to run as root: as root it is started with
`-u` as the owner of that socket folder (the embedded server's system user, the only one that
may enter it) or as `nobody` for a TCP server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.database import to_asyncpg

INSTALL_HINT = "apt-get install -y pgbouncer"
DEFAULT_POOL_SIZE = 4  # server connections per database: far fewer than the clients
MAX_CLIENT_CONNECTIONS = 400
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
PREPARED_STATEMENT_ERRORS = (
    "prepared statement",
    "DuplicatePreparedStatement",
    "InvalidSQLStatementName",
    "InvalidCachedStatement",
)


def pgbouncer_binary() -> str:
    """The pgbouncer executable; fails the test (never skips) when it is not installed."""
    found = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(path, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            f"pgbouncer is not installed; the pooler scenario needs it: `{INSTALL_HINT}` "
            "(CI: .ci/install-tools installs it)",
            pytrace=False,
        )
    return found


def prepared_statement_errors(text: str) -> list[str]:
    """The lines of a log that report a prepared-statement failure."""
    return [line[:300] for line in text.splitlines() if any(marker in line for marker in PREPARED_STATEMENT_ERRORS)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgBouncer:
    """A running pgbouncer; `url(database)` is how a client reaches `database` through it."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    run_as: str | None

    @property
    def log_path(self) -> Path:
        return self.folder / "pgbouncer.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def url(self, database: str) -> str:
        """A plain postgresql:// URL, as an operator would set DATABASE_URL to the pooler."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _upstream(server_url: str) -> tuple[str, int, str | None]:
    """(host or socket folder, port, socket folder owner) of the test's server."""
    url = make_url(to_asyncpg(server_url))
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, tuple):
        socket_dir = socket_dir[0]
    port = int(url.port or url.query.get("port") or 5432)  # type: ignore[arg-type]
    if socket_dir:
        return socket_dir, port, pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
    return url.host or "127.0.0.1", port, None


def _ini(port: int, folder: Path, host: str, upstream_port: int) -> str:
    return "\n".join(
        [
            "[databases]",
            f"* = host={host} port={upstream_port} user=postgres",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = any",
            "pool_mode = transaction",
            f"default_pool_size = {DEFAULT_POOL_SIZE}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {MAX_CLIENT_CONNECTIONS}",
            "ignore_startup_parameters = extra_float_digits",
            "server_reset_query =",
            "query_wait_timeout = 60",
            "log_connections = 0",
            "log_disconnections = 0",
            "log_pooler_errors = 1",
            "stats_period = 15",
            f"pidfile = {folder / 'pgbouncer.pid'}",
            "",
        ]
    )


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def running_pgbouncer(server_url: str) -> Iterator[PgBouncer]:
    """Start pgbouncer in front of the server of `server_url`; stop it (and remove its folder) after."""
    binary = pgbouncer_binary()
    host, upstream_port, socket_owner = _upstream(server_url)
    run_as = (socket_owner or "nobody") if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="fs-pgbouncer-"))
    try:
        if run_as is not None:
            account = pwd.getpwnam(run_as)
            os.chown(folder, account.pw_uid, account.pw_gid)
        for _attempt in range(3):  # a free port may be taken between choosing and binding it
            port = _free_port()
            ini = folder / "pgbouncer.ini"
            ini.write_text(_ini(port, folder, host, upstream_port), encoding="utf-8")
            ini.chmod(0o644)
            command = [binary, *(["-u", run_as] if run_as else []), str(ini)]
            with (folder / "pgbouncer.log").open("wb") as log:  # its log goes to stderr
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            bouncer = PgBouncer(process, port, folder, run_as)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while process.poll() is None and not _accepting(port) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)  # a separate process: nothing to await
            if process.poll() is None and _accepting(port):
                break
            bouncer.stop()
            if "Address already in use" not in bouncer.log():
                pytest.fail(f"pgbouncer did not start ({' '.join(command)}):\n{bouncer.log()[-3000:]}", pytrace=False)
        else:
            pytest.fail("pgbouncer found no free port in 3 attempts", pytrace=False)
        try:
            yield bouncer
        finally:
            bouncer.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class PoolerSession:
    """The session's pgbouncer, started by the first test that asks for it (so that a missing
    pgbouncer fails that test, not a fixture) and stopped at the end of the session."""

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._stack = contextlib.ExitStack()
        self._bouncer: PgBouncer | None = None

    def get(self) -> PgBouncer:
        if self._bouncer is None:
            self._bouncer = self._stack.enter_context(running_pgbouncer(self._server_url))
        return self._bouncer

    def close(self) -> None:
        self._stack.close()
