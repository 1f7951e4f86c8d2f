"""Logging: JSON lines by default, a console renderer on a terminal, personal data masked and
secrets removed from every field, exception text included."""

from __future__ import annotations

import io
import json
import logging

import structlog

from scheduler.logging import configure_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger("t").info("job_finished", job="cleanup_expired_otps", count=3)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "job_finished"
    assert line["count"] == 3
    assert line["level"] == "info"


def test_console_renderer_on_a_terminal() -> None:
    stream = _Terminal()
    configure_logging(stream=stream)
    structlog.get_logger("t").info("ready", port=9464)
    out = stream.getvalue()
    assert "ready" in out
    assert not out.lstrip().startswith("{")


def test_secrets_and_contacts_masked_everywhere_even_in_exceptions() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, secrets=["tok-SECRET-123"])
    log = structlog.get_logger("t")
    try:
        _fail_like_an_sdk()
    except RuntimeError:
        log.exception("send_failed", to="0412 345 678", nested={"email": "bob@example.com"})
    logging.getLogger("some.sdk").warning("retrying jane.doe@example.com with tok-SECRET-123")
    out = stream.getvalue()
    for leaked in ("tok-SECRET-123", "jane.doe@example.com", "bob@example.com", "+61412345678", "0412 345 678"):
        assert leaked not in out
    assert "j***@example.com" in out
    assert "+61 4** *** 678" in out
    assert "[redacted]" in out


def _fail_like_an_sdk() -> None:
    raise RuntimeError("auth tok-SECRET-123 failed for jane.doe@example.com at +61412345678")
