"""The runs in progress in this process, each an asyncio task started here, so that a stop can
wait for them and no run goes unseen: scheduled fires, catch-ups, take-overs, the HTTP triggers
and the demo round all start their runs through it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import structlog

from scheduler.db.run_leases import AbandonedRun
from scheduler.history import THIS_PROCESS
from scheduler.jobs.catalog import GROUPS
from scheduler.jobs.result import JobResult
from scheduler.records import Fire
from scheduler.runner import Runner
from scheduler.vocabulary import JobName, SkipReason, Trigger

log = structlog.get_logger(__name__)


class RunsInFlight:
    """Starts runs as tasks and keeps them until they end."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._tasks: set[asyncio.Task[Any]] = set()

    def _start(
        self, name: str, jobs: tuple[JobName, ...], work: Callable[[], Coroutine[Any, Any, Any]]
    ) -> asyncio.Task[Any] | None:
        """Hold the jobs here, then start `work`; None when stopping or one of them is held."""
        history = self.runner.history
        if self.runner.lifecycle.stopping or not history.reserve(jobs):
            return None
        task = asyncio.create_task(work(), name=name)
        self._tasks.add(task)
        task.add_done_callback(partial(self._done, jobs))
        return task

    def _done(self, jobs: tuple[JobName, ...], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self.runner.history.release(jobs)
        if not task.cancelled() and task.exception() is not None:
            log.error("run_crashed", task=task.get_name(), exc_info=task.exception())

    def run(
        self, job: JobName, trigger: Trigger, *, fire: Fire | None = None, abandoned: AbandonedRun | None = None
    ) -> asyncio.Task[Any] | None:
        """Start one run; None when stopping or a run of the job is in progress here (a fire
        skipped so is counted; a take-over is simply not needed)."""
        task = self._start(
            f"{trigger.value}:{job.value}",
            (job,),
            partial(self.runner.run, job, trigger=trigger, fire=fire, abandoned=abandoned),
        )
        if task is None and abandoned is None and not self.runner.lifecycle.stopping:
            self.runner.count_skip(job, SkipReason.ALREADY_RUNNING, THIS_PROCESS, slot=fire.slot if fire else None)
        return task

    def run_sequence(self, name: str, jobs: tuple[JobName, ...], trigger: Trigger) -> asyncio.Task[Any] | None:
        """Start the runs of these jobs one after the other; None when stopping or one is running here."""
        return self._start(name, jobs, partial(self._sequence, jobs, trigger))

    async def _sequence(self, jobs: tuple[JobName, ...], trigger: Trigger) -> list[JobResult]:
        results = []
        for job in jobs:
            if self.runner.lifecycle.stopping:
                break
            results.append(await self.runner.run(job, trigger=trigger))
        return results

    async def run_group(self, group: str, trigger: Trigger) -> list[JobResult] | None:
        """Run a group now and return its results (the HTTP triggers); None when it cannot start."""
        task = self.run_sequence(f"{trigger.value}:{group}", GROUPS[group], trigger)
        if task is None:
            return None
        results: list[JobResult] = await asyncio.shield(task)  # a dropped client does not stop the run
        return results

    @property
    def names(self) -> list[str]:
        return sorted(task.get_name() for task in self._tasks)

    async def idle(self) -> None:
        """Return once no run is in progress here."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, *, within_seconds: float, grace_seconds: float) -> bool:
        """Wait up to `within_seconds` for the runs; cancel what is left (allowing `grace_seconds`
        to unwind). True when every run ended by itself."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=within_seconds)
        if not pending:
            return True
        log.warning("shutdown_timeout", runs=sorted(task.get_name() for task in pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=grace_seconds)
        return False
