"""The line that tells a demo's user it is up, where to look and how to stop it."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from scheduler.app import App
    from scheduler.demo.last_night import HeldPath


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))


def banner(
    *,
    host: str,
    port: int,
    timezone: str,
    messages: dict[str, dict[str, int]],
    held: HeldPath | None = None,
    quiet_hours: str = "",
) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - naming, not binding
    tally = "; ".join(f"{channel} {_counts(statuses)}" for channel, statuses in sorted(messages.items()))
    quiet: list[str] = []
    if held is not None:  # the quiet-hours path (scheduler/demo/last_night.py)
        due = held.due_at.astimezone(ZoneInfo(timezone))
        quiet = [
            f"    held      {held.reference}: its reminder fell due at {due:%H:%M} in the quiet hours ({quiet_hours}),",
            f"              so its WhatsApp waited for them to end: now {_counts(held.statuses)}",
            f"              (flavor-scheduler --demo messages --booking {held.reference})",
        ]
    return "\n".join(
        [
            "",
            f"  flavor-scheduler demo is ready: every job ran once, now each runs on its schedule ({timezone}).",
            f"    metrics   http://{shown}:{port}/metrics",
            f"    health    http://{shown}:{port}/healthz",
            f"    messages  {tally or 'none'}",
            "              WhatsApp is printed above; email is off in the demo (no RESEND_API_KEY): skipped.",
            *quiet,
            "  Press Ctrl-C to stop.",
            "",
        ]
    )


async def announce_when_ready(app: App, stream: TextIO) -> None:
    """Once the daemon is ready and the demo's first round is done, print the banner."""
    from scheduler.db import outbox_counts
    from scheduler.demo.last_night import held_path
    from scheduler.demo.seed import HELD_REFERENCE
    from scheduler.lifecycle import Phase

    await app.lifecycle.reached(Phase.READY)
    await app.inflight.idle()
    if app.lifecycle.stopping:
        return
    async with app.db.connect() as conn:
        tally = await outbox_counts.count_by_channel_and_status(conn)
        held = await held_path(conn, HELD_REFERENCE)
    settings = app.settings
    port = app.http.port if app.http.port is not None else settings.http_port
    text = banner(
        host=settings.http_host,
        port=port,
        timezone=settings.timezone,
        messages=tally,
        held=held,
        quiet_hours=settings.quiet_hours,
    )
    stream.write(text + "\n")
    stream.flush()
