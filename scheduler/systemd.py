"""sd_notify: tell systemd (a `Type=notify` unit) that the daemon is ready or stopping.

The protocol is one datagram to the socket named by NOTIFY_SOCKET; a leading `@` names an
abstract socket. Without NOTIFY_SOCKET (not under systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. READY=1) to systemd; True when it was sent. A failure is logged, never raised."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd_notify_failed", state=state, error=f"{type(exc).__name__}: {exc.strerror or exc}")
        return False
    return True
