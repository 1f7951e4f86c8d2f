"""Is HTTP_PORT free? Asked before anything starts, so a port in use is one clear line (exit 2)."""

from __future__ import annotations

import errno
import socket


def port_in_use(host: str, port: int) -> bool:
    """True when another process listens on host:port (0 is never in use: the system picks one)."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unknown host is the settings' business; let the server say so
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the HTTP server binds: a port in TIME_WAIT after our own last run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False
