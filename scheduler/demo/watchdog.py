"""`python -m scheduler.demo.watchdog PARENT POSTMASTER DATA_DIR`: wait for PARENT to end, then stop
the demo's server if it is still the one PARENT started (see scheduler/demo/guard.py)."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5  # only where pidfd_open is missing (Linux before 5.3)


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(POLL_SECONDS)
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    parent, postmaster, data_dir = int(argv[0]), int(argv[1]), Path(argv[2])
    _wait_for_exit(parent)
    from scheduler.demo.guard import postmaster_pid, stop_server

    if postmaster_pid(data_dir) == postmaster:  # still ours: not stopped, not replaced by a newer demo's
        stop_server(postmaster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
