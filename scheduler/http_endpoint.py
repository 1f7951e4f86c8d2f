"""What a provider's callback endpoint (Twilio's status callbacks, Resend's webhook) works with:
the settings holding its secret, the database it records into, the clock, the metrics it counts
in, and the guard whose per-request deadline bounds the body's arrival."""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.db.database import Database
from scheduler.http_guard import Guard
from scheduler.metrics import Metrics
from scheduler.settings import Settings


class ProviderEndpoint:
    """The base of the provider endpoints: one constructor for what they all need."""

    def __init__(self, settings: Settings, *, db: Database, clock: Clock, metrics: Metrics, guard: Guard) -> None:
        self._settings = settings
        self.guard = guard  # its deadline bounds the body's arrival
        self._db = db
        self._clock = clock
        self._metrics = metrics
