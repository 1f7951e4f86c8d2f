"""What a job is handed: its dependencies, built once by the app, and the facts of this run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler.db.platform import PlatformTables
from scheduler.metrics import Metrics
from scheduler.notify.dispatcher import Dispatcher
from scheduler.notify.outbox import MessagePlanner
from scheduler.settings import Settings


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class JobContext:
    settings: Settings
    engine: AsyncEngine
    tables: PlatformTables
    metrics: Metrics
    planner: MessagePlanner
    dispatcher: Dispatcher
    run_id: UUID = field(default_factory=uuid4)
    dry_run: bool = False
    # True once the daemon is stopping: a job finishes the item in hand and returns.
    should_stop: Callable[[], bool] = _never
    log: structlog.stdlib.BoundLogger = field(default_factory=lambda: structlog.get_logger("scheduler.jobs"))
