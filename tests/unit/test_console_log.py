"""The console log a person reads on a terminal: local time in TIMEZONE, plain values, lines that fit."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import structlog

from scheduler.logging import ConsoleLine, configure_logging

PERTH = ZoneInfo("Australia/Perth")


def render(width: int = 100, **fields: object) -> str:
    event = {"timestamp": "2026-11-29T10:00:05.123456Z", "level": "info", "logger": "scheduler.daemon", **fields}
    return ConsoleLine(PERTH, width=width)(None, "info", event)


def test_local_time_and_no_python_reprs() -> None:
    line = render(
        event="ready",
        next_runs={"cleanup_stale_bookings": "2026-11-30T02:00:00+08:00", "send_booking_reminders": "off"},
        kinds=["booking_reminder", "payment_reminder"],
        slot=None,
        skipped=None,
        dry_run=False,
        errors=[],
    )
    assert line.startswith("18:00:05 info    ready")  # 10:00 UTC is 18:00 in Perth
    assert "next_runs={cleanup_stale_bookings: Mon 02:00, send_booking_reminders: off}" in line
    assert "kinds=[booking_reminder, payment_reminder]" in line
    for noise in ("'", "None", "False", "errors=", "logger", "scheduler.daemon"):
        assert noise not in line


def test_the_count_goes_by_its_result_name_and_run_ids_are_short() -> None:
    line = render(
        event="job_finished", count=3, count_key="cancelledCount", run_id="5eb04f74-3b5e-482c-bf01-a40d78a50691"
    )
    assert "cancelledCount=3" in line and "count_key" not in line
    assert "run_id=5eb04f74 " in line + " "


def test_lines_fit_the_terminal() -> None:
    line = render(
        width=80,
        event="job_finished",
        errors=[f"booking FE-{n:05d}: whatsapp to client +61 4** *** 678: invalid phone number" for n in range(9)],
        next_runs={f"job_{n}": "2026-11-30T02:00:00+08:00" for n in range(7)},
    )
    lines = line.splitlines()
    assert len(lines) > 1
    assert all(len(text) <= 80 for text in lines), lines
    assert "… 4 more" in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_configured_for_a_terminal_with_the_time_zone() -> None:
    stream = _Terminal()
    configure_logging(stream=stream, timezone=PERTH)
    structlog.get_logger("t").warning("channel_off", channel="email")
    out = stream.getvalue()
    assert "channel_off  channel=email" in out
    assert "+08:00" not in out and "Z " not in out
