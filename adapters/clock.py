"""Time for the running service: the real `Clock`, optionally scaled, and a manual clock for tests.

The core never reads time itself; it is handed a `Clock` (fsm/ports.py). `SystemClock` is the real
one: `time.time`, `time.monotonic`, `asyncio.sleep`. With `time_scale=k` every clock second lasts
1/k real seconds, so a service and the simulator built with the same factor agree on how long a
predictive drain or a 24 h channel lifetime is while the test runs k times faster.

`ManualClock` is the test double: time stands still until a test advances it, and `sleep` wakes
in deadline order as it does, so hours of backoff run in milliseconds and every instant a policy
acts on is exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import TypeVar

__all__ = ["ManualClock", "SystemClock"]

_T = TypeVar("_T")


class SystemClock:
    """The real clock. `time_scale` > 1 runs clock time faster than real time."""

    __slots__ = ("_mono0", "_scale", "_wall0")

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self._scale = float(time_scale)
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    @property
    def time_scale(self) -> float:
        return self._scale

    def now(self) -> float:
        if self._scale == 1.0:
            return time.time()
        # Scaled wall time starts at the real wall time of construction, so timestamps stay plausible.
        return self._wall0 + (time.monotonic() - self._mono0) * self._scale

    def monotonic(self) -> float:
        if self._scale == 1.0:
            return time.monotonic()
        return self._mono0 + (time.monotonic() - self._mono0) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)

    def __repr__(self) -> str:
        return f"SystemClock(time_scale={self._scale})"


class ManualClock:
    """A clock that moves only when told to. Sleepers wake in deadline order as time advances.

    `advance(s)` moves time forward, waking every sleeper whose deadline is passed, letting the
    woken tasks run between deadlines. `run_until(aw)` drives an awaitable to completion by
    jumping to the next deadline whenever nothing else can run.
    """

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._t = start
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._wall_offset + self._t

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        self._prune()
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self, rounds: int = 50) -> None:
        """Let every runnable task run until it blocks (on the clock or on I/O)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._t + seconds
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._wake(deadline)
            await self.settle()
        self._t = max(self._t, target)
        await self.settle()

    async def step(self) -> bool:
        """Jump to the next deadline and wake its sleepers. False if nobody sleeps."""
        await self.settle()
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self._wake(deadline)
        await self.settle()
        return True

    async def run_until(self, aw: asyncio.Future[_T], *, max_steps: int = 100_000) -> _T:
        """Advance time as needed until `aw` is done, then return its result."""
        for _ in range(max_steps):
            await self.settle()
            if aw.done():
                return aw.result()
            if not await self.step():
                await asyncio.sleep(0.001)  # blocked on real I/O (a mock transport), not on the clock
        raise TimeoutError(f"not done after {max_steps} clock steps")

    def _wake(self, deadline: float) -> None:
        self._t = max(self._t, deadline)
        while self._sleepers and self._sleepers[0][0] <= self._t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _prune(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def __repr__(self) -> str:
        return f"ManualClock(t={self._t})"
