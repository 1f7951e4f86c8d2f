"""Running the real command line as a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI_TIMEOUT_SECONDS = 120


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any of the daemon's settings, plus `extra`."""
    keep = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATABASE_", "TWILIO_", "RESEND_", "SCHEDULE_", "CRON_"))
    }
    keep.update({"LOG_FORMAT": "json", "HTTP_PORT": "0", "QUIET_HOURS": "off"})  # the tests run at any hour
    keep.update(extra)
    return keep


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> Completed:
    completed = subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    return Completed(completed.returncode, completed.stdout, completed.stderr)
