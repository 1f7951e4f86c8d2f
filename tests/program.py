"""`python -m tests.program TIMINGS [ARGS ...]`: the real program (`scheduler.cli.main`), built with
the timings a test gives, so that multi-process tests need not wait out production leases or real
cron minutes. TIMINGS is JSON: `{"limits": {Limits field: number}, "schedules": {job: cron}}`,
where a schedule may have a leading field of seconds (`*/3 * * * * *`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from scheduler.cli import main
from scheduler.limits import Limits
from scheduler.vocabulary import JobName


def command(timings: dict[str, Any], *args: str) -> list[str]:
    """The argv that runs the program with these timings (PYTHONPATH must hold the repository)."""
    return [sys.executable, "-m", "tests.program", json.dumps(timings), *args]


def _run(argv: list[str]) -> int:
    timings = json.loads(argv[0])
    schedules = timings.get("schedules")
    return main(
        argv[1:],
        limits=Limits(**timings.get("limits", {})),
        schedules={JobName(job): expression for job, expression in schedules.items()} if schedules else None,
    )


if __name__ == "__main__":
    sys.exit(_run(sys.argv[1:]))
