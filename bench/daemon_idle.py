"""The daemon at rest: time from start to `ready` with a reachable database, then resident memory
and CPU over a minute of idling (issue targets: ready <= 3 s, RSS <= 90 MB, CPU <= 0.5 % of a core).

    .venv/bin/python bench/daemon_idle.py [--idle-seconds 60] [--starts 3] [--no-channels]

Both channels are configured (dummy credentials: idle, the daemon calls no provider), as in production.

Uses BENCH_DATABASE_URL, else this machine's PostgreSQL on 127.0.0.1:5432, else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database

READY_TIMEOUT_SECONDS = 60.0
SAMPLE_SECONDS = 1.0  # RSS is sampled once a second during the idle minute


def _env(database_url: str, *, channels: bool) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SCHEDULE_", "HTTP_", "LOG_"))}
    env.update(
        DATABASE_URL=database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    if channels:
        # As in production, both providers' SDKs loaded; idle, the daemon calls neither.
        env.update(
            TWILIO_ACCOUNT_SID="AC" + "0" * 32,
            TWILIO_AUTH_TOKEN="bench-token-0000",  # noqa: S106 - a dummy; nothing is sent
            TWILIO_WHATSAPP_NUMBER="+14155238886",
            RESEND_API_KEY="re_bench_0000",
        )
    return env


def _start(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], Path, float]:
    log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler"], env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
        )
    return process, log_path, started


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path, started: float) -> float:
    """Seconds from spawning the process to its `ready` line."""
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        for line in log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                return time.monotonic() - started
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.01)
    raise SystemExit("the daemon did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def measure(database_url: str, idle_seconds: float, starts: int, channels: bool) -> None:
    env = _env(database_url, channels=channels)
    with tempfile.TemporaryDirectory(prefix="fs-bench-daemon-") as tmp:
        workdir = Path(tmp)
        ready_times = []
        for _ in range(starts):
            process, log_path, started = _start(env, workdir)
            ready_times.append(_wait_ready(process, log_path, started))
            _stop(process)

        process, log_path, started = _start(env, workdir)
        ready = _wait_ready(process, log_path, started)
        watched = psutil.Process(process.pid)
        time.sleep(2.0)  # let start-up work (imports, first queries) settle before measuring idle
        cpu_before = watched.cpu_times()
        wall_before = time.monotonic()
        rss = []
        while time.monotonic() - wall_before < idle_seconds:
            rss.append(watched.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)
        cpu_after = watched.cpu_times()
        wall = time.monotonic() - wall_before
        exit_code = _stop(process)

    cpu_seconds = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    print(f"start to ready:   median {statistics.median([*ready_times, ready]):.2f} s over {starts + 1} starts "
          f"(min {min([*ready_times, ready]):.2f} s, max {max([*ready_times, ready]):.2f} s)")  # fmt: skip
    print(f"idle RSS:         {max(rss) / 2**20:.1f} MB max, {statistics.median(rss) / 2**20:.1f} MB median "
          f"over {wall:.0f} s")  # fmt: skip
    print(f"idle CPU:         {100 * cpu_seconds / wall:.3f} % of one core ({cpu_seconds:.2f} s CPU in {wall:.0f} s)")
    print(f"exit on SIGTERM:  {exit_code}")


async def _with_database(idle_seconds: float, starts: int, channels: bool) -> None:
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await asyncio.to_thread(measure, url, idle_seconds, starts, channels)
        finally:
            await drop_database(server, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--starts", type=int, default=3, help="extra starts for the start-to-ready median")
    parser.add_argument("--no-channels", action="store_true", help="without Twilio and Resend configured")
    args = parser.parse_args()
    asyncio.run(_with_database(args.idle_seconds, args.starts, not args.no_channels))


if __name__ == "__main__":
    main()
