"""What a job is handed: the dependencies the app built once, and the facts of this run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import structlog

from scheduler.db.database import Database
from scheduler.db.platform import PlatformTables
from scheduler.limits import Limits
from scheduler.metrics import Metrics
from scheduler.notify.dispatcher import Dispatcher
from scheduler.notify.planner import MessagePlanner
from scheduler.settings import Settings


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What every job may use, built once by the app (`tables` is filled in at start)."""

    settings: Settings
    db: Database
    tables: PlatformTables
    metrics: Metrics
    planner: MessagePlanner
    dispatcher: Dispatcher
    limits: Limits


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class JobContext:
    """One run of a job: its dependencies, its id, and whether it should stop early."""

    deps: Dependencies
    run_id: UUID = field(default_factory=uuid4)
    dry_run: bool = False
    # True once the daemon is stopping (or the run's lease was lost): finish the item in hand, return.
    should_stop: Callable[[], bool] = _never
    log: structlog.stdlib.BoundLogger = field(default_factory=lambda: structlog.get_logger("scheduler.jobs"))
