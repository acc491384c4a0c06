"""Test doubles the core ships for its own tests and for anyone testing against it: `FakeClock`.

`FakeClock` implements the `Clock` port (`fsm/ports.py`) in virtual time. `sleep` never waits on the
real clock: a sleeper parks on a future keyed by its deadline, and time moves only when told to.

Three ways to move time:

- **manual**: `await clock.advance(seconds)` walks the timeline to `now + seconds`, waking sleepers
  one deadline at a time, in deadline order (equal deadlines in the order they went to sleep), and
  lets the event loop settle after each wake, so a woken task that sleeps again before the target is
  woken again within the same `advance`.
- **from synchronous code**: `clock.jump_to(t)` sets the time at once and wakes every sleeper due by
  then, without letting the loop run (the simulator's timer wheel fires its own callbacks this way).
- **auto-advance** (`FakeClock(auto_advance=True)`): whenever every task is blocked (the event loop
  has nothing ready to run) and someone is sleeping, time jumps to the earliest deadline. Hours of
  backoff run in milliseconds, and a test reads like straight-line code: `await clock.sleep(3600)`.
  Like trio's autojump clock, it assumes that a blocked loop is waiting for virtual time; a test
  that waits for real I/O should use manual mode.

"Nothing ready to run" is read from the default event loop's ready queue. On a loop without one
(uvloop) the clock falls back to yielding a fixed number of times, which is enough for the short
callback chains of unit tests but is a heuristic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from .tasks import cancel_and_wait

__all__ = ["FakeClock"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Yields used to settle a loop whose ready queue we cannot see, and the safety bound on settling a
# loop that never goes idle (a task spinning on sleep(0) would otherwise hang the clock).
_FALLBACK_YIELDS = 50
_MAX_SETTLE_ROUNDS = 100_000


@dataclass(order=True)
class _Sleeper:
    deadline: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class FakeClock:
    """Virtual time for the `Clock` port. Start wall time is fixed, so event timestamps are stable."""

    def __init__(self, *, start: float = 0.0, wall_start: float = 1_700_000_000.0,
                 auto_advance: bool = False) -> None:
        if not (math.isfinite(start) and math.isfinite(wall_start)):
            raise ValueError("FakeClock start times must be finite numbers")
        self._mono = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._auto = auto_advance
        self._heap: list[_Sleeper] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._settling: asyncio.Lock | None = None

    # --- the Clock port ------------------------------------------------------------------------

    def now(self) -> float:
        return self._mono + self._wall_offset

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if math.isnan(seconds):
            raise ValueError("cannot sleep for NaN seconds")
        if seconds <= 0:
            await asyncio.sleep(0)  # still a cancellation point and a yield, like asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        sleeper = _Sleeper(self._mono + seconds, next(self._seq), loop.create_future())
        heapq.heappush(self._heap, sleeper)
        if self._auto:
            self._ensure_driver(loop)
        # A cancelled sleeper's future is cancelled with it and skipped when the heap is walked.
        await sleeper.future

    # --- driving time --------------------------------------------------------------------------

    @property
    def auto_advance(self) -> bool:
        return self._auto

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock right now."""
        return sum(1 for s in self._heap if not s.future.done())

    @property
    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest sleeper, or None when nobody sleeps."""
        head = self._head()
        return None if head is None else head.deadline

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper due on the way, in deadline order."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"advance needs a finite number of seconds >= 0, got {seconds!r}")
        await self.advance_to(self._mono + seconds)

    async def advance_to(self, target: float) -> None:
        """Move time forward to the monotonic instant `target` (never backwards)."""
        if not math.isfinite(target):
            raise ValueError(f"advance_to needs a finite time, got {target!r}")
        if target < self._mono:
            raise ValueError(f"time only moves forward: now {self._mono}, asked for {target}")
        await self.settle()
        while (head := self._head()) is not None and head.deadline <= target:
            self._wake_due(head.deadline)
            await self.settle()
        # The auto driver may have jumped past `target` meanwhile: time never moves backwards.
        self._mono = max(self._mono, target)
        await self.settle()

    async def advance_to_next(self) -> bool:
        """Jump to the earliest sleeper and wake it (and its equals). False when nobody sleeps."""
        await self.settle()
        head = self._head()
        if head is None:
            return False
        self._wake_due(head.deadline)
        await self.settle()
        return True

    def jump_to(self, target: float) -> None:
        """Set the time to `target` now, from synchronous code, waking every sleeper due by then.

        None of them runs before the caller yields, so unlike `advance_to` they all wake to `target`,
        not each to its own deadline.
        """
        if not math.isfinite(target):
            raise ValueError(f"jump_to needs a finite time, got {target!r}")
        if target < self._mono:
            raise ValueError(f"time only moves forward: now {self._mono}, asked for {target}")
        self._wake_due(target)

    async def run_until(self, aw: Awaitable[T]) -> T:
        """Await `aw`, moving time whenever everything else waits on it; its result."""
        future = asyncio.ensure_future(aw)
        while not future.done():
            await self.settle()
            if future.done():
                break
            if not self._auto and not await self.advance_to_next():
                await asyncio.sleep(0)  # nobody sleeps on us: it waits on something real
            elif self._auto:
                await asyncio.wait({future}, timeout=0.01)
        return future.result()

    async def settle(self) -> None:
        """Yield until no other callback is ready to run: every task is blocked on something."""
        # Two settlers yielding at once would each see the other as runnable forever, so the test's
        # advance() and the auto driver take turns.
        if self._settling is None:
            self._settling = asyncio.Lock()
        async with self._settling:
            await self._settle_once()

    async def _settle_once(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_MAX_SETTLE_ROUNDS):
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            if ready is None:
                for _ in range(_FALLBACK_YIELDS):
                    await asyncio.sleep(0)
                return
            if not ready:
                return
        raise RuntimeError("FakeClock.settle: the event loop never went idle (a task spins on sleep(0)?)")

    async def aclose(self) -> None:
        """Stop the auto-advance driver, if one runs. Sleepers stay asleep."""
        driver, self._driver = self._driver, None
        await cancel_and_wait(driver)

    async def __aenter__(self) -> FakeClock:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        mode = "auto" if self._auto else "manual"
        return f"FakeClock(t={self._mono:.3f}, sleepers={self.sleepers}, {mode})"

    # --- internals -----------------------------------------------------------------------------

    def _head(self) -> _Sleeper | None:
        while self._heap and self._heap[0].future.done():
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def _wake_due(self, deadline: float) -> None:
        self._mono = max(self._mono, deadline)
        while self._heap and self._heap[0].deadline <= deadline:
            sleeper = heapq.heappop(self._heap)
            if not sleeper.future.done():
                sleeper.future.set_result(None)

    def _ensure_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._driver is not None and not self._driver.done():
            return
        self._driver = loop.create_task(self._drive(), name="fake-clock:auto-advance")
        self._driver.add_done_callback(_report_driver_crash)

    async def _drive(self) -> None:
        # Exits when nobody sleeps; the next sleep starts a new driver. So a test that never calls
        # aclose() leaves nothing pending once its sleepers are done or cancelled.
        while True:
            await self.settle()
            head = self._head()
            if head is None:
                return
            self._wake_due(head.deadline)


def _report_driver_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("FakeClock auto-advance driver crashed", exc_info=exc)
