"""Process start: `flavor-scheduler --help` and an empty `--run-once` as whole processes, with their
peak memory (issue targets: --help <= 0.3 s, empty --run-once <= 0.8 s; console commands <= 0.5 s).

    .venv/bin/python bench/startup.py [--runs 10]

Wall time includes the interpreter's own start; CPU is user + system time of the process, which a
busy machine inflates less than wall time. The idle daemon's memory is bench/daemon_idle.py's.

Uses BENCH_DATABASE_URL, else this machine's PostgreSQL on 127.0.0.1:5432, else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCRIPT = Path(sys.executable).with_name("flavor-scheduler")  # the console script, as operators run it
# A child's peak RSS as Linux reports it (wait4) starts from its parent's size at fork: the commands
# are started by this small process, started before the benchmark loads SQLAlchemy and the rest.
_LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    started = time.perf_counter()
    process = subprocess.Popen(job["args"], env=job["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    print(json.dumps({"code": process.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                      "rss": usage.ru_maxrss / 1024, "stderr": errors.decode(errors="replace")[-3000:]}), flush=True)
"""
_launcher = subprocess.Popen(
    [sys.executable, "-S", "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)

from bench.support import bench_server, drop_database, fresh_database  # noqa: E402 - after the launcher


def _env(database_url: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SCHEDULE_", "HTTP_", "LOG_"))}
    env["LOG_FORMAT"] = "json"
    if database_url is not None:
        env["DATABASE_URL"] = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return env


def _once(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one run of the command."""
    assert _launcher.stdin is not None
    assert _launcher.stdout is not None
    _launcher.stdin.write(json.dumps({"args": [str(SCRIPT), *args], "env": env}) + "\n")
    _launcher.stdin.flush()
    done = json.loads(_launcher.stdout.readline())
    if done["code"] != 0:
        raise SystemExit(f"{' '.join(args)} exited {done['code']}:\n{done['stderr']}")
    return done["wall"], done["cpu"], done["rss"]


def _report(label: str, runs: list[tuple[float, float, float]]) -> None:
    walls, cpus, rss = zip(*runs, strict=True)
    print(
        f"{label:<34} wall median {statistics.median(walls):.3f} s (min {min(walls):.3f} s), "
        f"CPU median {statistics.median(cpus):.3f} s, peak RSS {max(rss):.1f} MB  [{len(runs)} runs]"
    )


def measure(database_url: str, runs: int) -> None:
    help_env = _env(None)
    _once(["--help"], help_env)  # warm the file cache
    _report("flavor-scheduler --help", [_once(["--help"], help_env) for _ in range(runs)])
    env = _env(database_url)
    job = ["--run-once", "cleanup_expired_otps"]
    _once(job, env)
    _report("--run-once (nothing to do)", [_once(job, env) for _ in range(runs)])
    _report("--list-jobs", [_once(["--list-jobs"], env) for _ in range(runs)])
    load = os.getloadavg()
    print(f"load average during the runs: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")


async def _with_database(runs: int) -> None:
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await asyncio.to_thread(measure, url, runs)
        finally:
            await drop_database(server, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    try:
        asyncio.run(_with_database(args.runs))
    finally:
        assert _launcher.stdin is not None
        _launcher.stdin.close()
        _launcher.wait()


if __name__ == "__main__":
    main()
