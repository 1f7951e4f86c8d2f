"""What every console command is given and what it gives back: the `Context` (settings, the
time, the parsed command line) and the `Answer` (a JSON document or tables, notes, problems and
so the exit code).

Its own module so that the reads (`reads.py`), the changes (`changes.py`), the table of commands
(`commands.py`) and the runner of one command (`run.py`) share these words without importing
each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg
    from rich.console import Console

    from scheduler.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ConsoleUsageError(ValueError):
    """Arguments that do not make a command (exit 2)."""


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    now: datetime  # this machine's clock: business time, as the jobs compare next attempts with it
    args: Any  # the parsed command line

    @property
    def tz(self) -> tzinfo:
        return self.settings.tz

    @property
    def secrets(self) -> list[str]:
        return self.settings.secret_values()


@dataclass(slots=True)
class Answer:
    """What a command prints: `document` with --json, else `draw` (tables); `notes` and
    `problems` go to stderr, and any problem makes the exit code 1."""

    document: dict[str, Any]
    draw: Callable[[Console], None]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return EXIT_FAILED if self.problems else EXIT_OK


Command = Callable[["asyncpg.Connection", Context], Awaitable[Answer]]
