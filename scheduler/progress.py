"""What a run has done so far, counted as it goes (rows deleted, bookings cancelled, messages sent),
so that a long run can say so while it works: the runner's progress lines, the terminal's bar.

The run in progress is found through a context variable: the runner sets it for its task, and
the tasks a job starts (the dispatcher's sends) inherit it, so no layer in between passes it on.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field

Listener = Callable[[str, int], None]  # (what, how many more)
Watcher = Callable[["Progress"], AbstractContextManager[None]]  # shows one run's progress while it lasts

_current: ContextVar[Progress | None] = ContextVar("scheduler_progress", default=None)
_watcher: ContextVar[Watcher | None] = ContextVar("scheduler_progress_watcher", default=None)


@dataclass(slots=True)
class Progress:
    """One run's counts so far."""

    job: str
    counts: Counter[str] = field(default_factory=Counter)
    listeners: list[Listener] = field(default_factory=list)

    def add(self, what: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[what] += n
        for listener in self.listeners:
            listener(what, n)


def count(what: str, n: int = 1) -> None:
    """Count `n` more of `what` for the run in progress in this task, if there is one."""
    progress = _current.get()
    if progress is not None:
        progress.add(what, n)


@contextlib.contextmanager
def tracking(job: str) -> Iterator[Progress]:
    """Count what the block (one run of `job`) does, shown by the watcher set with `watched_by`."""
    progress = Progress(job)
    watcher = _watcher.get()
    with watcher(progress) if watcher is not None else contextlib.nullcontext():
        token = _current.set(progress)
        try:
            yield progress
        finally:
            _current.reset(token)


@contextlib.contextmanager
def watched_by(watcher: Watcher | None) -> Iterator[None]:
    """Show the progress of each run started in the block with `watcher` (None: not shown)."""
    token = _watcher.set(watcher)
    try:
        yield
    finally:
        _watcher.reset(token)
