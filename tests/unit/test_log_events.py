"""Every log event the daemon writes is documented, in the one table operators read
(docs/troubleshooting.md, "Log events"): the table cannot fall behind the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `log.info("event", ...)`, `bound.warning(\n    "event"`, `finished("event"` (a level chosen at run time)
_EMITTED = re.compile(
    r"\b(?:log|bound|logger|finished)(?:\.(?:debug|info|warning|error|exception|critical))?\(\s*\"([a-z][a-z0-9_]+)\""
)
_DOCUMENTED_ROW = re.compile(r"^\| ((?:`[a-z][a-z0-9_]+`(?:, )?)+) \|", re.MULTILINE)


def emitted() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "scheduler").rglob("*.py"):
        names |= set(_EMITTED.findall(path.read_text(encoding="utf-8")))
    return names


def documented() -> set[str]:
    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    section = text[text.index("## Log events") :]
    return {name for row in _DOCUMENTED_ROW.findall(section) for name in re.findall(r"`([a-z0-9_]+)`", row)}


def test_the_scan_finds_the_events_it_should() -> None:
    assert {"ready", "job_started", "job_finished", "message_sent", "fire_retry_scheduled"} <= emitted()


def test_every_event_the_code_writes_is_documented() -> None:
    assert sorted(emitted() - documented()) == []


def test_every_documented_event_is_written_somewhere() -> None:
    assert sorted(documented() - emitted()) == []
