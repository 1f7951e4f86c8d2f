"""Fixtures of the fault suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where subprocesses run: an empty folder, so no stray .env is read."""
    return tmp_path
