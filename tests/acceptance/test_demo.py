"""The demo as a newcomer meets it: a readable start, a ready banner, and an embedded server that
never outlives it, however it is stopped (CONTRACT §3 `--demo`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import pytest

from tests.acceptance.cli import CLI_TIMEOUT_SECONDS, clean_env, run_cli
from tests.database import to_libpq

STOP_SECONDS = 30.0
PERTH = ZoneInfo("Australia/Perth")
HELD = "FE-DEMO-10"


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


def _this_hour() -> datetime:
    return datetime.now(PERTH).replace(minute=0, second=0, microsecond=0)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def _whatsapp_of_the_held_booking(workdir: Path, env: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    trail = run_cli("--demo", "messages", "--booking", HELD, "--json", env=env, cwd=workdir)
    assert trail.code == 0, trail.stderr
    body = trail.json()
    return [m for m in body["messages"] if m["channel"] == "whatsapp"], body


def test_a_reminder_due_in_last_nights_quiet_hours_is_held_then_sent_by_day(tmp_path: Path) -> None:
    # Quiet hours that ended an hour ago, whatever the hour the test runs at: the demo is started
    # "by day", and the reminder run of two hours ago fell in them.
    hour = _this_hour()
    quiet_from, quiet_to = hour - timedelta(hours=6), hour - timedelta(hours=1)
    env = clean_env(TIMEZONE="Australia/Perth", QUIET_HOURS=f"{quiet_from:%H:%M}-{quiet_to:%H:%M}")
    done = run_cli("--demo", "--run-once", "all", env=env, cwd=tmp_path)
    assert done.code == 0, done.stderr
    replayed_at = hour - timedelta(hours=2)  # the latest hourly reminder run inside the quiet hours

    (replay,) = _log_events(done.stderr, "demo_quiet_hours_replay")
    assert replay["booking"] == HELD and _at(replay["at"]) == replayed_at
    held = [line for line in _log_events(done.stderr, "message_held") if line["booking"] == HELD]
    assert len(held) == 2 and all(_at(line["until"]) == quiet_to for line in held)  # client and performer
    assert all(line["job"] == "send_booking_reminders" for line in held)
    sent = [line for line in _log_events(done.stderr, "message_sent") if line["booking"] == HELD]
    assert sorted(line["role"] for line in sent) == ["client", "performer"]
    assert {line["job"] for line in sent} == {"deliver_pending_messages"}  # the start-up's pickup
    assert f"whatsapp · booking reminder · {HELD}" in done.stderr  # printed when sent, not before
    # The other paths are as they were: the held booking owes no reminder now (it had its one).
    summary = done.json()["summary"]
    assert summary["bookingReminders"] == {"sent": 2, "errors": []}
    assert summary["paymentReminders"] == {"sent": 2, "errors": []}
    assert summary["staleBookings"] == {"cancelled": 1, "errors": []}

    whatsapp, trail = _whatsapp_of_the_held_booking(tmp_path, env)
    assert sorted(m["role"] for m in whatsapp) == ["client", "performer"]
    for message in whatsapp:
        assert message["status"] == "sent" and message["attempts"] == 1, message
        assert _at(message["createdAt"]) == replayed_at  # owed by the run in the quiet hours
        assert _at(message["sentAt"]) >= quiet_to  # and sent only once they were over
    assert [_at(reminder["recordedAt"]) for reminder in trail["reminders"]] == [replayed_at]
    # Its event fell inside the 24-hour horizon after the hourly run before, by the run replayed.
    event_date = _at(trail["booking"]["eventDate"])
    assert replayed_at + timedelta(hours=23) < event_date <= replayed_at + timedelta(hours=24)


def test_started_in_quiet_hours_the_held_reminder_waits_for_their_end(tmp_path: Path) -> None:
    # Quiet hours from an hour ago to three hours ahead: the demo is started "at night".
    hour = _this_hour()
    quiet_from, quiet_to = hour - timedelta(hours=1), hour + timedelta(hours=3)
    settings = {"TIMEZONE": "Australia/Perth", "QUIET_HOURS": f"{quiet_from:%H:%M}-{quiet_to:%H:%M}"}
    env = clean_env(**settings)
    with demo_daemon(tmp_path, **settings) as (process, seen):
        out = "".join(seen)
        assert f"booking reminder · {HELD}" not in out  # nothing of it printed: nothing sent
        assert f"    held      {HELD}: its reminder fell due at " in out
        assert "so its WhatsApp waited for them to end: now 2 held" in out
        whatsapp, trail = _whatsapp_of_the_held_booking(tmp_path, env)  # joins the running demo
        process.send_signal(signal.SIGINT)
        assert process.wait(STOP_SECONDS) == 0
    assert len(whatsapp) == 2
    (recorded,) = trail["reminders"]
    replayed_at = _at(recorded["recordedAt"])
    assert quiet_from <= replayed_at <= datetime.now(PERTH) and replayed_at.minute == 0
    for message in whatsapp:
        assert message["status"] == "held", message
        assert _at(message["nextAttemptAt"]) == quiet_to
        assert message["reason"] == f"quiet hours: held until {quiet_to:%Y-%m-%d %H:%M} Australia/Perth"


def test_no_quiet_hours_no_held_path(tmp_path: Path) -> None:
    done = run_cli("--demo", "--run-once", "all", env=clean_env(QUIET_HOURS="off"), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert _log_events(done.stderr, "demo_quiet_hours_replay") == []
    (ready,) = _log_events(done.stderr, "demo_data_ready")
    assert ready["bookings"] == 9 and ready["quiet_hours_path"] is None
