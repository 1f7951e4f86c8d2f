"""RateLimiter under a frozen clock (and once under the real one), and Retry-After parsing."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.clock import FrozenClock, SystemClock
from scheduler.notify.ratelimit import RateLimiter, parse_retry_after
from tests.fakes.providers import max_in_window

START = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


async def grant_times(limiter: RateLimiter, clock: FrozenClock | SystemClock, count: int) -> list[float]:
    """Start `count` concurrent acquires; the clock reading at each grant, in grant order."""
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        granted.append(clock.monotonic())

    await asyncio.gather(*(one() for _ in range(count)))
    return granted


async def test_fifty_concurrent_senders_at_ten_per_second() -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(10, clock)
    began = clock.monotonic()

    granted = await grant_times(limiter, clock, 50)

    assert len(granted) == 50
    assert max_in_window(granted, 1.0) == 10
    assert 4.0 <= clock.monotonic() - began <= 5.1  # the window's margin: 20 ms a second


async def test_grants_are_spaced_evenly_without_a_burst() -> None:
    """A burst would reach the provider smeared by latency and overlap the next second's grants."""
    clock = FrozenClock(START)
    limiter = RateLimiter(10, clock)

    granted = await grant_times(limiter, clock, 10)

    gaps = [later - earlier for earlier, later in itertools.pairwise(granted)]
    assert gaps == pytest.approx([0.1] * 9)


class LateClock(FrozenClock):
    """A frozen clock whose every sleep wakes `late_seconds` late, as timers do on a busy loop."""

    def __init__(self, start: datetime, late_seconds: float) -> None:
        super().__init__(start)
        self.late_seconds = late_seconds

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.late_seconds)


@pytest.mark.parametrize("late_ms", [0.5, 2.0, 4.5])
async def test_timers_waking_late_neither_slow_the_grants_nor_break_the_ceiling(late_ms: float) -> None:
    """Spacing each grant from the late wake-up would make 100/s into 98/s, 83/s or 53/s."""
    clock = LateClock(START, late_ms / 1000)
    limiter = RateLimiter(100, clock)
    began = clock.monotonic()

    granted = await grant_times(limiter, clock, 1000)

    assert max_in_window(granted, 1.0) <= 100
    # At least 96% of the ceiling: each window may start a wake-up late (and has its margin of
    # 20 ms), but no interval is stretched (stretched by 0.5 ms, 1,000 grants take 10.5 s).
    assert clock.monotonic() - began <= 10.0 / 0.96


async def test_a_stall_is_not_caught_up_with_a_burst() -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(10, clock)
    await grant_times(limiter, clock, 3)
    clock.advance(2.0)  # the loop was busy elsewhere, or nobody asked

    granted = await grant_times(limiter, clock, 5)

    gaps = [later - earlier for earlier, later in itertools.pairwise(granted)]
    assert gaps == pytest.approx([0.1] * 4)


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(2, clock)
    order: list[int] = []

    async def one(n: int) -> None:
        async with limiter:
            order.append(n)

    await asyncio.gather(*(one(n) for n in range(12)))

    assert order == list(range(12))


async def test_the_ceiling_holds_across_separate_bursts() -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(5, clock)

    granted = await grant_times(limiter, clock, 7)
    clock.advance(0.4)  # a later run arrives while the window still holds the first grants
    granted += await grant_times(limiter, clock, 7)

    assert max_in_window(granted, 1.0) <= 5


@pytest.mark.parametrize(("rate", "per_window"), [(2.5, 2), (1.0, 1), (0.5, 1)])
async def test_a_fractional_ceiling_is_never_exceeded(rate: float, per_window: int) -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(rate, clock)

    granted = await grant_times(limiter, clock, 9)

    assert max_in_window(granted, 1.0) <= per_window
    assert max_in_window(granted, 1.0 / rate) <= max(1, math.floor(rate))


async def test_a_waiter_cancelled_while_waiting_gives_its_slot_up() -> None:
    clock = FrozenClock(START)
    limiter = RateLimiter(1, clock)
    await limiter.acquire()
    began = clock.monotonic()

    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # it takes the lock and starts waiting out the window
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(limiter.acquire(), timeout=5)

    # The next caller got the slot the cancelled one was waiting for, without a second wait
    # (the window's margin aside).
    assert clock.monotonic() - began == pytest.approx(1.0, abs=0.05)


async def test_the_real_clock_keeps_the_ceiling() -> None:
    clock = SystemClock()
    limiter = RateLimiter(40, clock)
    began = time.monotonic()

    granted = await grant_times(limiter, clock, 60)

    assert max_in_window(granted, 1.0) <= 40
    assert time.monotonic() - began >= 1.0


def test_a_ceiling_must_be_positive() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive"):
            RateLimiter(bad, FrozenClock(START))


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.2, max_value=60.0, allow_nan=False),
    count=st.integers(min_value=1, max_value=90),
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.5), max_size=5),
)
def test_no_window_ever_holds_more_than_the_ceiling(rate: float, count: int, gaps: list[float]) -> None:
    async def scenario() -> list[float]:
        clock = FrozenClock(START)
        limiter = RateLimiter(rate, clock)
        granted = await grant_times(limiter, clock, count)
        for gap in gaps:
            clock.advance(gap)
            granted += await grant_times(limiter, clock, count // 2 + 1)
        return granted

    granted = asyncio.run(scenario())

    assert max_in_window(granted, 1.0) <= max(1, math.floor(rate))
    assert max_in_window(granted, max(1.0, 1.0 / rate)) <= max(1, math.floor(rate))


# Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        (format_datetime(START + timedelta(seconds=45), usegmt=True), 45.0),
        ("Fri, 04 Dec 2026 02:01:00 GMT", 60.0),
        (format_datetime(START - timedelta(minutes=5), usegmt=True), 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("inf", None),
    ],
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, START) == expected


def test_max_in_window_counts_half_open_windows() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.5]) == 2
    assert max_in_window([0.0, 0.0, 0.99]) == 3
