"""The fault suite's report: the figures each scenario measured, and what the leak scanner read.

Set FAULTS_FIGURES=/path/figures.json to keep them as JSON too (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.faults.support import EXPOSURE, FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES and not EXPOSURE.sources:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite figures")
    for scenario in sorted(FIGURES):
        values = ", ".join(f"{name}={_show(value)}" for name, value in FIGURES[scenario].items())
        write(f"{scenario}: {values}")
    write(
        f"leak scan: {EXPOSURE.sources} outputs, {EXPOSURE.characters:,} characters, "
        f"{len(EXPOSURE.leaks)} leaks"
    )
    target = os.environ.get("FAULTS_FIGURES")
    if target:
        body = {
            "scenarios": FIGURES,
            "leak_scan": {"outputs": EXPOSURE.sources, "characters": EXPOSURE.characters, "leaks": EXPOSURE.leaks},
            "database": "TEST_DATABASE_URL" if os.environ.get("TEST_DATABASE_URL") else "embedded",
        }
        Path(target).write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where subprocesses run: an empty folder, so no stray .env is read."""
    return tmp_path
