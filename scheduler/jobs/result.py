"""What one run of a job did, as the job function returns it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.records import OwedDelivery
from scheduler.vocabulary import DeliveryStatus, JobName, MessageState, RunOutcome, SkipReason

# What a delivery recorded already finished (never claimed) means for the run that owed it.
_SETTLED_STATES = {DeliveryStatus.SKIPPED: MessageState.SKIPPED, DeliveryStatus.FAILED: MessageState.FAILED}


@dataclass(slots=True)
class JobResult:
    """What one run of a job did: its count, its errors, and how its messages ended the run."""

    job: JobName
    started_at: datetime
    finished_at: datetime | None = None
    count: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    skipped: SkipReason | None = None  # why the job did not run (another replica has it, a table is missing)
    details: dict[str, Any] = field(default_factory=dict)
    fatal: bool = False  # the run itself could not do its work (see fail())
    interrupted: bool = False  # stopped by a signal after the item in hand
    messages: Counter[MessageState] = field(default_factory=Counter)

    def fail(self, error: str) -> None:
        """The run could not do its work (the database went away, a crash): outcome `error`."""
        self.errors.append(error)
        self.fatal = True

    def count_recorded(self, settled: Iterable[OwedDelivery]) -> None:
        """Messages finished as they were recorded (channel off, bad address) count for this run."""
        self.messages.update(_SETTLED_STATES[row.status] for row in settled if row.status in _SETTLED_STATES)

    @property
    def outcome(self) -> RunOutcome:
        if self.fatal:
            return RunOutcome.ERROR
        return RunOutcome.PARTIAL if self.errors else RunOutcome.SUCCESS

    @property
    def success(self) -> bool:
        return self.outcome is RunOutcome.SUCCESS
