"""Where the process stands: starting, waiting for the database, ready, stopping.

The one owner of "are we up, ready, stopping?": the daemon (or a one-off command) moves it on;
the runner, the dispatcher's callers and the HTTP endpoints only read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

from scheduler.clock import Clock


class Phase(StrEnum):
    STARTING = "starting"  # HTTP may answer; nothing else is up yet
    WAITING_FOR_DATABASE = "waiting_for_database"
    READY = "ready"  # schema migrated, tables checked, schedule running
    STOPPING = "stopping"  # no new run starts; running ones finish the item in hand


_ORDER = tuple(Phase)


class Lifecycle:
    """The process's phase, its stop request, and the heartbeat that proves the loop alive."""

    def __init__(
        self,
        clock: Clock,
        *,
        health_stale_seconds: float,
        scheduler_running: Callable[[], bool],
        on_change: Callable[[Phase], None] | None = None,
    ) -> None:
        self.phase = Phase.STARTING
        self._clock = clock
        self._health_stale_seconds = health_stale_seconds
        self._on_change = on_change
        self._reached = {phase: asyncio.Event() for phase in Phase}
        self._reached[Phase.STARTING].set()
        self._last_beat = clock.monotonic()
        self._scheduler_running = scheduler_running

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        for earlier in _ORDER[: _ORDER.index(phase) + 1]:
            self._reached[earlier].set()
        if self._on_change is not None:
            self._on_change(phase)

    def waiting_for_database(self) -> None:
        if self.phase is Phase.STARTING:
            self._enter(Phase.WAITING_FOR_DATABASE)

    def become_ready(self) -> None:
        """The database answers, the schema is ours, the schedule runs; ignored once stopping."""
        if self.phase is not Phase.STOPPING:
            self._enter(Phase.READY)

    def request_stop(self) -> bool:
        """Begin stopping; True the first time (the caller tells systemd), False after."""
        if self.phase is Phase.STOPPING:
            return False
        self._enter(Phase.STOPPING)
        return True

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def stopping(self) -> bool:
        return self.phase is Phase.STOPPING

    def should_stop(self) -> bool:
        """What a job asks between items."""
        return self.phase is Phase.STOPPING

    async def reached(self, phase: Phase) -> None:
        """Return once the process is at `phase` or past it (a stop counts as past every phase)."""
        await self._reached[phase].wait()

    def has_reached(self, phase: Phase) -> bool:
        return self._reached[phase].is_set()

    # Liveness ------------------------------------------------------------------------------

    def beat(self) -> None:
        """The heartbeat: the loop ran just now."""
        self._last_beat = self._clock.monotonic()

    def liveness_problem(self) -> str | None:
        """None while the process is alive, else what is wrong (for /healthz)."""
        silent = self._clock.monotonic() - self._last_beat
        if silent > self._health_stale_seconds:
            return f"no heartbeat for {silent:.0f} s"
        if self.ready and not self._scheduler_running():
            return "the scheduler has stopped"
        return None
