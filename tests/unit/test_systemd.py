"""sd_notify: one datagram to NOTIFY_SOCKET, a path or an abstract name; nothing without it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler import systemd


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_sends_one_datagram_to_the_socket_path(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert systemd.notify(systemd.READY, environ={"NOTIFY_SOCKET": path})
    assert sock.recv(1024) == b"READY=1"


def test_abstract_socket_names_start_with_at() -> None:
    name = f"fs-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert systemd.notify(systemd.STOPPING, environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(1024) == b"STOPPING=1"


def test_nothing_is_sent_outside_systemd() -> None:
    assert not systemd.notify(systemd.READY, environ={})


def test_a_socket_that_is_gone_is_logged_not_raised(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert not systemd.notify(systemd.READY, environ={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert [entry["event"] for entry in logs] == ["systemd_notify_failed"]
