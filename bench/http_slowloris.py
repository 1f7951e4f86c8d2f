"""The daemon under a sustained slow-loris attack, as issue 12 measured it: 4,100 idle or trickling
connections against a daemon limited to 4,096 descriptors (the unit's LimitNOFILE), every
connection the server closes opened again at once.

    .venv/bin/python bench/http_slowloris.py [--connections 4100] [--seconds 70] [--nofile 4096]

Prints the probes' latencies and failures, the daemon's most descriptors and connections, its log
lines during the attack, and the scheduled runs (two jobs every minute) and their outcomes.
Before the guard: /healthz stopped, runs failed with "Too many open files", 834,141 log lines.

Uses BENCH_DATABASE_URL, else this machine's PostgreSQL on 127.0.0.1:5432, else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import bench_server, drop_database, fresh_database

READY_TIMEOUT_SECONDS = 60.0
PROBE_INTERVAL_SECONDS = 0.5
TRICKLE_INTERVAL_SECONDS = 1.0  # one header byte a second: each trickler looks alive forever


def _env(database_url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SCHEDULE_", "HTTP_", "LOG_"))}
    env.update(
        DATABASE_URL=database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        SCHEDULE_SEND_BOOKING_REMINDERS="* * * * *",
        SCHEDULE_DELIVER_PENDING_MESSAGES="* * * * *",
    )
    return env


def _events(log_path: Path) -> list[dict[str, object]]:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> int:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        for event in _events(log_path):
            if event.get("event") == "http_listening":
                port = int(str(event["port"]))
            if event.get("event") == "ready":
                return port
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited {process.returncode}:\n{log_path.read_text()}")
        await asyncio.sleep(0.05)
    raise SystemExit("the daemon did not become ready")


async def _attacker(port: int, trickling: bool, stop: asyncio.Event, opened: Counter[str]) -> None:
    """One connection at a time, opened again as soon as the server closes it."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except (OSError, TimeoutError):
            opened["connect_failed"] += 1
            continue
        opened["opened"] += 1
        try:
            if trickling:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b"x")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(TRICKLE_INTERVAL_SECONDS):
                            await reader.read(1)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(60):
                        await reader.read()
        except OSError:
            pass
        finally:
            writer.close()


async def run_attackers(port: int, connections: int, report: Path) -> None:
    """The attacker process: runs until killed, writing what it did to `report` every second."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (connections + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    stop = asyncio.Event()
    opened: Counter[str] = Counter()
    tasks = [asyncio.create_task(_attacker(port, n % 2 == 1, stop, opened)) for n in range(connections)]
    while True:
        report.write_text(json.dumps(dict(opened)))
        await asyncio.sleep(1.0)
    await asyncio.gather(*tasks)


def _established_to(port: int) -> int:
    """Client sockets connected to the port (accepted or still in the kernel's backlog), as ss counts them."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=False
    ).stdout
    return len(out.splitlines())


async def _probe(http: aiohttp.ClientSession, url: str) -> float | None:
    started = time.monotonic()
    try:
        async with http.get(url) as response:
            await response.read()
            return time.monotonic() - started if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def attack(url: str, connections: int, seconds: float, nofile: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fs-bench-slowloris-") as tmp:
        log_path = Path(tmp) / "daemon.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything runs
                [sys.executable, "-m", "scheduler"],
                env=_env(url),
                cwd=tmp,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),  # noqa: PLW1509
            )
        attackers: subprocess.Popen[bytes] | None = None
        try:
            port = await _wait_ready(process, log_path)
            watched = psutil.Process(process.pid)
            lines_before = len(log_path.read_text(encoding="utf-8").splitlines())
            report = Path(tmp) / "attackers.json"
            attackers = subprocess.Popen(  # noqa: ASYNC220 - a process of its own, so the probes' loop is not theirs
                [sys.executable, __file__, "--attack-port", str(port), "--connections", str(connections),
                 "--report", str(report)]
            )  # fmt: skip
            await asyncio.sleep(3.0)  # let the attack ramp up before probing
            latencies: list[float] = []
            failures = most_fds = most_clients = 0
            connector = aiohttp.TCPConnector(force_close=True)  # each probe a new connection, as a kubelet's
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as http:
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    for path in ("/healthz", "/metrics"):
                        latency = await _probe(http, f"http://127.0.0.1:{port}{path}")
                        if latency is None:
                            failures += 1
                        else:
                            latencies.append(latency)
                    most_fds = max(most_fds, watched.num_fds())
                    most_clients = max(most_clients, _established_to(port))
                    await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            opened = json.loads(report.read_text())
            attackers.kill()
            attackers.wait()
        finally:
            if attackers is not None and attackers.poll() is None:
                attackers.kill()
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(timeout=60)
        events = _events(log_path)
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[lines_before:]
    runs = Counter(str(e.get("outcome")) for e in events if e.get("event") == "job_finished")
    limited = [e for e in events if e.get("event") == "http_connections_limited"]
    emfile = sum("Too many open files" in line for line in lines)
    latencies.sort()
    print(
        f"attack:           {connections} connections (half idle, half trickling), {seconds:.0f} s, daemon nofile {nofile}"
    )
    print(
        f"attacker:         {opened.get('opened', 0)} connections opened, {opened.get('connect_failed', 0)} connects timed out"
    )
    print(f"probes:           {len(latencies)} answered 200, {failures} failed; latency median "
          f"{statistics.median(latencies) * 1000:.0f} ms, p99 {latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
    print(
        f"daemon:           at most {most_fds} descriptors; at most {most_clients} client connections established at once"
    )
    print(f"log:              {len(lines)} lines during the attack ({len(limited)} http_connections_limited), "
          f"{emfile} 'Too many open files'")  # fmt: skip
    print(f"scheduled runs:   {dict(runs)}")
    print(f"exit on SIGTERM:  {exit_code}")


async def _main(connections: int, seconds: float, nofile: int) -> None:
    with bench_server() as server:
        url = await fresh_database(server)
        try:
            await attack(url, connections, seconds, nofile)
        finally:
            await drop_database(server, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4100)
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--nofile", type=int, default=4096)
    parser.add_argument("--attack-port", type=int, help=argparse.SUPPRESS)  # the attacker process
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.attack_port:
        asyncio.run(run_attackers(arguments.attack_port, arguments.connections, arguments.report))
    else:
        asyncio.run(_main(arguments.connections, arguments.seconds, arguments.nofile))
