"""The demo's embedded server is ours alone and never outlives us.

One demo per folder (a lock that dies with its holder); a server left running by a demo that was
killed is stopped before a new one starts; and a small watchdog process, in a session of its own,
stops our server should this process end without stopping it (SIGKILL, a second signal's
immediate exit).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ORPHAN_STOP_SECONDS = 15.0  # a fast shutdown of the small demo server takes well under a second


class DemoAlreadyRunning(RuntimeError):
    """Another demo holds this folder's embedded server."""


@contextlib.contextmanager
def demo_lock(runtime_dir: Path) -> Iterator[None]:
    """Hold this folder's demo lock for the block; DemoAlreadyRunning when another process holds it."""
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = runtime_dir / "demo.lock"
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise DemoAlreadyRunning(
                f"another demo is running in this folder (pid {holder}) on {runtime_dir.parent / '.demo-pgdata'}; "
                "stop it (Ctrl-C) first, or start this one in another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the server running on `data_dir`, or None when none is."""
    try:
        first = (data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0].strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's (the embedded server's own system user)
    return pid


def stop_server(pid: int, *, timeout: float = ORPHAN_STOP_SECONDS) -> None:
    """Fast shutdown (SIGINT) of a postmaster; SIGKILL if it has not gone within `timeout`."""
    import psutil

    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGINT)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        process.kill()


def stop_orphan(data_dir: Path) -> int | None:
    """Stop a server a killed demo left running on `data_dir` (we hold the lock: it is nobody's); its pid."""
    pid = postmaster_pid(data_dir)
    if pid is not None:
        stop_server(pid)
    # The embedded server counts the processes using it in this file and stops only when the last
    # one leaves; a killed demo never left, so start counting afresh.
    (data_dir / ".handle_pids.json").unlink(missing_ok=True)
    return pid


def start_watchdog(data_dir: Path) -> subprocess.Popen[bytes] | None:
    """A process that stops the server on `data_dir` once this process has ended, however it ended."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return None
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "scheduler.demo.watchdog", str(os.getpid()), str(pid), str(data_dir)],
        start_new_session=True,  # signals to our process group (Ctrl-C, a supervisor's kill) do not reach it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
