"""The real program as separate processes, for the tests that run it as an operator does: each
daemon's JSON log goes to a file the test reads, its HTTP port comes from its `http_listening`
line, and conditions are polled with a deadline (a subprocess cannot be awaited on an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from scheduler.vocabulary import JobName
from tests.database import to_libpq
from tests.program import command

T = TypeVar("T")
SECRET = "cron-secret-for-the-tests"
QUIET = "0 0 1 1 *"  # once a year: nothing fires unless the test triggers it
POLL_SECONDS = 0.2
START_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 10
REPOSITORY = Path(__file__).resolve().parents[2]


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Poll `check` until it returns something other than None (or fail after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


@dataclass
class DaemonProcess:
    """One `python -m scheduler` process; its JSON log lines go to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, env: dict[str, str], workdir: Path, timings: dict[str, Any] | None = None
    ) -> DaemonProcess:
        """The real program, built with `timings` (tests/program.py; none: production's)."""
        log_path = workdir / f"{name}.log"
        env = {**env, "PYTHONPATH": str(REPOSITORY)}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command(timings or {}), env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
            )
        return cls(name, process, log_path)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and (name is None or entry.get("event") == name):
                    entries.append(entry)
        return entries

    async def wait_ready(self) -> dict[str, Any]:
        async def ready() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.log_path.read_text()}")
            found = self.events("ready")
            return found[0] if found else None

        return await eventually(ready, within=START_TIMEOUT_SECONDS, what=f"{self.name} to be ready")

    async def wait_listening(self) -> int:
        """The HTTP port, once the daemon answers (before it has reached its database)."""

        async def listening() -> int | None:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.log_path.read_text()}")
            found = self.events("http_listening")
            return int(found[0]["port"]) if found else None

        return await eventually(listening, within=START_TIMEOUT_SECONDS, what=f"{self.name} to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.events('http_listening')[0]['port']}"

    @property
    def replica(self) -> str:
        return str(self.events("ready")[0]["replica"])

    async def wait_exit(self, within: float) -> int:
        async def exited() -> int | None:
            return self.process.poll()

        return await eventually(exited, within=within, what=f"{self.name} to exit")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def daemons(
    count: int,
    env: dict[str, str],
    workdir: Path,
    prefix: str = "replica",
    timings: dict[str, Any] | None = None,
) -> Iterator[list[DaemonProcess]]:
    started = [DaemonProcess.start(f"{prefix}-{n}", env, workdir, timings) for n in range(count)]
    try:
        yield started
    finally:
        for daemon in started:
            daemon.kill()


def daemon_env(database_url: str, **settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=to_libpq(database_url),
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        CRON_SECRET=SECRET,
        SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT_SECONDS),
        PYTHONUNBUFFERED="1",
        QUIET_HOURS="off",  # the tests run at any hour
    )
    env.update({f"SCHEDULE_{job.value.upper()}": QUIET for job in JobName})
    env.update({name.upper(): value for name, value in settings.items()})
    return env


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET}"}


async def stop_gracefully(daemon: DaemonProcess) -> float:
    """SIGTERM; assert exit 0 within the shutdown timeout; returns how long it took."""
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit(SHUTDOWN_TIMEOUT_SECONDS + 5) == 0, daemon.log_path.read_text()[-3000:]
    elapsed = time.monotonic() - started
    assert elapsed < SHUTDOWN_TIMEOUT_SECONDS
    return elapsed
