"""The line that tells a demo's user it is up, where to look and how to stop it."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from scheduler.daemon import Daemon


def banner(*, host: str, port: int, timezone: str, messages: dict[str, dict[str, int]]) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - naming, not binding
    tally = "; ".join(
        f"{channel} " + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        for channel, statuses in sorted(messages.items())
    )
    return "\n".join(
        [
            "",
            f"  flavor-scheduler demo is ready: every job ran once, now each runs on its schedule ({timezone}).",
            f"    metrics   http://{shown}:{port}/metrics",
            f"    health    http://{shown}:{port}/healthz",
            f"    messages  {tally or 'none'}",
            "              WhatsApp is printed above; email is off in the demo (no RESEND_API_KEY): skipped.",
            "  Press Ctrl-C to stop.",
            "",
        ]
    )


async def _message_tally(daemon: Daemon) -> dict[str, dict[str, int]]:
    from sqlalchemy import func, select

    from scheduler.db.tables import deliveries

    query = select(deliveries.c.channel, deliveries.c.status, func.count()).group_by(
        deliveries.c.channel, deliveries.c.status
    )
    tally: dict[str, dict[str, int]] = {}
    async with daemon.app.engine.connect() as conn:
        for channel, status, count in await conn.execute(query):
            tally.setdefault(str(channel), {})[str(status)] = int(count)
    return tally


async def announce_when_ready(daemon: Daemon, stream: TextIO) -> None:
    """Once the daemon is ready and the demo's first round is done, print the banner."""
    await daemon.ready.wait()
    await daemon.wait_idle()
    settings = daemon.app.settings
    port = daemon.http.port if daemon.http.port is not None else settings.http_port
    text = banner(host=settings.http_host, port=port, timezone=settings.timezone, messages=await _message_tally(daemon))
    stream.write(text + "\n")
    stream.flush()
