"""Dead-man's-switch pings (HEARTBEAT_URL_<JOB>, healthchecks.io style): `URL/start` when a run
starts, `URL` after it did its work, `URL/fail` after it could not. A ping is sent in the
background and never fails or delays the run; a failing one is logged with the URL masked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from scheduler.redact import mask_url
from scheduler.vocabulary import JobName, RunOutcome

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger(__name__)


class HeartbeatPings:
    """Pings each job's URL around its runs. One job's pings leave in order (start before its
    end), each bounded by `timeout_seconds`; `aclose` waits at most `drain_seconds` for the last."""

    def __init__(self, urls: Mapping[JobName, str], *, timeout_seconds: float, drain_seconds: float) -> None:
        self._urls = {job: url.rstrip("/") for job, url in urls.items()}
        self._timeout_seconds = timeout_seconds
        self._drain_seconds = drain_seconds
        self._session: aiohttp.ClientSession | None = None
        self._last: dict[JobName, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def started(self, job: JobName) -> None:
        """A run of `job` began."""
        self._ping(job, "/start")

    def finished(self, job: JobName, outcome: RunOutcome) -> None:
        """A run of `job` ended: `partial` did its work, so it counts as a success (with a warning)."""
        if outcome is RunOutcome.PARTIAL and job in self._urls:
            log.warning("heartbeat_partial_as_success", job=job.value, url=mask_url(self._urls[job]))
        self._ping(job, "/fail" if outcome is RunOutcome.ERROR else "")

    def _ping(self, job: JobName, suffix: str) -> None:
        url = self._urls.get(job)
        if url is None:
            return
        previous = self._last.get(job)
        task = asyncio.create_task(self._send(job, url + suffix, previous), name=f"heartbeat-{job.value}")
        self._last[job] = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, job: JobName, url: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # the start ping first, so the checker never sees an end before it
            await asyncio.wait([previous])  # however it ended; our own cancellation still stops us
        import aiohttp  # only where a ping URL is set

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_seconds))
        try:
            async with self._session.get(url, allow_redirects=True) as response:
                await response.read()
                if response.status >= 400:
                    log.warning("heartbeat_failed", job=job.value, url=mask_url(url), status=response.status)
                    return
        except TimeoutError:
            log.warning("heartbeat_failed", job=job.value, url=mask_url(url), error="timed out")
        except (aiohttp.ClientError, OSError) as exc:  # the exception's text holds the full URL
            log.warning("heartbeat_failed", job=job.value, url=mask_url(url), error=type(exc).__name__)
        else:
            log.debug("heartbeat_sent", job=job.value, url=mask_url(url))

    async def aclose(self) -> None:
        """Give the pings still in flight `drain_seconds` to finish, drop the rest, close the session."""
        if self._pending:
            _, unfinished = await asyncio.wait(set(self._pending), timeout=self._drain_seconds)
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning("heartbeats_abandoned", count=len(unfinished), waited_seconds=self._drain_seconds)
                await asyncio.wait(unfinished)
        if self._session is not None:
            await self._session.close()
            self._session = None
