"""The progress bar of `--run-once` on a terminal: the rows a run deletes, the bookings it cancels
and the messages it sends, counted as they go (rich, on stderr). Never when stderr is not a
terminal, so a log file, a pipe and the JSON result on stdout stay clean; rich loads only then.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from scheduler.progress import Progress, Watcher

# The counts shown, with the words a person reads them by (others are left to the progress lines).
SHOWN = {
    "deleted": "rows deleted",
    "blanked": "messages blanked",
    "cancelled": "bookings cancelled",
    "sent": "messages sent",
    "failed": "messages failed",
}


def terminal_watcher() -> Watcher | None:
    """A watcher drawing each run's bar on stderr, or None when stderr is not a terminal."""
    stream = sys.stderr
    if not stream.isatty():
        return None

    @contextlib.contextmanager
    def watch(progress: Progress) -> Iterator[None]:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        bar = Bar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>8,.0f}"),
            TimeElapsedColumn(),
            console=Console(file=stream),
            redirect_stdout=False,  # stdout is the result's JSON, printed after the bar
            redirect_stderr=True,
        )
        tasks: dict[str, Any] = {}  # rich's task ids
        shown = contextlib.ExitStack()

        def advance(what: str, n: int) -> None:
            if what not in SHOWN:
                return
            if not tasks:  # the bar appears with the first count: a run with nothing to show draws nothing
                shown.enter_context(bar)
                shown.enter_context(_logs_above_the_bar(stream))
            if what not in tasks:
                tasks[what] = bar.add_task(f"{progress.job}: {SHOWN[what]}", total=None)
            bar.advance(tasks[what], n)

        progress.listeners.append(advance)
        try:
            yield
        finally:
            progress.listeners.remove(advance)
            shown.close()

    return watch


@contextlib.contextmanager
def _logs_above_the_bar(stream: Any) -> Iterator[None]:
    """Log lines go to the bar's console while it is drawn (printed above it, never through it):
    the handlers writing to `stream` write to rich's proxy of it, which `redirect_stderr` installed."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(stream)
