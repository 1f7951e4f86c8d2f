"""What one run of a job did, as the job function returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.vocabulary import JobName, SkipReason


@dataclass(slots=True)
class JobResult:
    """What one run of a job did."""

    job: JobName
    started_at: datetime
    finished_at: datetime | None = None
    count: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    skipped: SkipReason | None = None  # why the job did not run (another replica has it, a table is missing)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.errors
