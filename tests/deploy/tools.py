"""Shared helpers of the deployment tests: where the repository is, and finding the real tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL_TIMEOUT_SECONDS = 90  # promtool's unit tests take ~15 s; anything slower is stuck


def find_tool(name: str, install: str) -> str:
    """The path of `name` on PATH or beside this interpreter; a clear failure when it is missing.

    The deployment checks are only worth something when the real tool runs, so a missing tool is
    a failure telling how to install it, never a skip.
    """
    found = shutil.which(name)
    if found is None:
        beside = Path(sys.executable).parent / name  # a virtualenv's bin/, when it is not on PATH
        if beside.is_file() and os.access(beside, os.X_OK):
            found = str(beside)
    if found is None:
        pytest.fail(f"{name} is not installed; install it with: {install}", pytrace=False)
    return found


def run(args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output as text."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )
