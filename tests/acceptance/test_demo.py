"""The demo as a newcomer meets it: a readable start, a ready banner, and an embedded server that
never outlives it, however it is stopped (CONTRACT §3 `--demo`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.acceptance.cli import CLI_TIMEOUT_SECONDS, clean_env, run_cli
from tests.database import to_libpq

STOP_SECONDS = 30.0


@contextmanager
def demo_daemon(workdir: Path, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`flavor-scheduler --demo` in a session of its own; yields once its banner is printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "--demo"],
        cwd=workdir,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # blocks until the daemon prints; the test timeout bounds it
            seen.append(line)
            if "Ctrl-C" in line:
                break
        assert any("Ctrl-C" in line for line in seen), "".join(seen)
        yield process, seen
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(CLI_TIMEOUT_SECONDS)
        if process.stdout is not None:
            process.stdout.close()


def postmaster(workdir: Path) -> psutil.Process:
    return psutil.Process(int((workdir / ".demo-pgdata" / "postmaster.pid").read_text().split()[0]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_banner_names_the_urls_and_how_to_stop(tmp_path: Path) -> None:
    port = free_port()
    with demo_daemon(tmp_path, HTTP_PORT=str(port), HTTP_HOST="127.0.0.1") as (process, seen):
        out = "".join(seen)
        assert f"http://127.0.0.1:{port}/metrics" in out and f"http://127.0.0.1:{port}/healthz" in out
        assert "Press Ctrl-C to stop" in out
        assert "┌─ whatsapp · booking cancelled · FE-DEMO-01" in out  # messages are blocks on stdout
        tally = next(line for line in seen if line.strip().startswith("messages"))
        assert "email 7 skipped" in tally  # email is off in the demo
        assert "whatsapp 6 sent" in tally or "held" in tally  # WhatsApp waits out quiet hours where they exist
        server = postmaster(tmp_path)
        process.send_signal(signal.SIGINT)
        assert process.wait(STOP_SECONDS) == 0
    server.wait(STOP_SECONDS)
    assert not (tmp_path / ".demo-pgdata" / "postmaster.pid").exists()


def test_two_signals_still_stop_the_embedded_server(tmp_path: Path) -> None:
    with demo_daemon(tmp_path, HTTP_PORT="0") as (process, _):
        server = postmaster(tmp_path)
        # A supervisor's signal to the group, then another (two different ones, which never merge
        # into one delivery): the second makes the daemon exit at once, without its clean-up.
        os.killpg(process.pid, signal.SIGTERM)
        os.killpg(process.pid, signal.SIGINT)
        # Exits at the second signal, or at once if the first one's stop was already done.
        assert process.wait(STOP_SECONDS) in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT)
    server.wait(STOP_SECONDS)  # stopped by the demo's watchdog, which outlives the daemon


def test_a_server_left_by_a_killed_demo_is_stopped_at_the_next_start(tmp_path: Path) -> None:
    with demo_daemon(tmp_path, HTTP_PORT="0") as (process, _):
        server = postmaster(tmp_path)
        for child in psutil.Process(process.pid).children():
            child.kill()  # the watchdog too: as if the whole tree had been killed but the server
        process.kill()
        process.wait(STOP_SECONDS)
    assert server.is_running()
    done = run_cli("--demo", "--run-once", "cleanup_expired_otps", env=clean_env(), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert '"demo_orphan_stopped"' in done.stderr and f'"pid": {server.pid}' in done.stderr
    server.wait(STOP_SECONDS)


def test_a_second_command_joins_the_running_demo_without_reseeding(tmp_path: Path) -> None:
    with demo_daemon(tmp_path, HTTP_PORT="0") as (process, _):
        done = run_cli("--demo", "--run-once", "cleanup", "--dry-run", env=clean_env(), cwd=tmp_path)
        assert done.code == 0, done.stderr
        assert '"demo_joined"' in done.stderr
        assert done.json()["summary"]["staleBookings"]["wouldCancel"] == 0  # the running demo cancelled it
        process.send_signal(signal.SIGINT)
        assert process.wait(STOP_SECONDS) == 0


@pytest.mark.parametrize("demo", [True, False], ids=["demo", "daemon"])
def test_port_in_use_is_exit_2_naming_http_port(tmp_path: Path, database_url: str, demo: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(HTTP_PORT=str(port), **({} if demo else {"DATABASE_URL": to_libpq(database_url)}))
        done = run_cli(*(["--demo"] if demo else []), env=env, cwd=tmp_path)
    assert done.code == 2
    assert done.stderr.strip() == f"flavor-scheduler: HTTP_PORT {port} is in use; set HTTP_PORT to a free port"
    assert not (tmp_path / ".demo-pgdata").exists()  # nothing was started or seeded
