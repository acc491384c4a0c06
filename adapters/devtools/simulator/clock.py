"""Simulated time: the timer wheel that moves the tenant, on the service's own clocks.

Everything the simulated platform does on its own schedule (a campaign finishing STARTING, a
heartbeat, a channel expiring, a socket closing after its warning) is a timer on one `Scheduler`,
read against an injected `Clock` in *simulated* seconds. The clocks are the service's:

* `adapters.clock.SystemClock(scale, start=0.0)` runs `scale` times faster than real time
  (100 => a 120 s drain takes 1.2 s), and the scheduler's background driver fires timers as they
  fall due;
* `fsm.testing.FakeClock` stands still until a test calls `Scheduler.advance(seconds)`, which steps
  the clock to each due timer in order and fires it, so a unit test is deterministic and instant.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from fsm.ports import Clock
from fsm.tasks import cancel_and_wait
from fsm.testing import FakeClock

from ...clock import SystemClock

__all__ = ["Scheduler", "Timer", "wall_deadline"]

_log = logging.getLogger(__name__)


def wall_deadline(clock: Clock, seconds: float) -> float:
    """The epoch time at which `seconds` of `clock` will have passed, as a client's wall clock reads it.

    A scaled clock's seconds are shorter than real ones, and a channel's `expires` is read against
    real time; a `FakeClock`'s own wall time is the only one its tests have.
    """
    if isinstance(clock, SystemClock):
        return time.time() + seconds / clock.time_scale
    return clock.now() + seconds


class Timer:
    """A handle on a scheduled callback. `cancel()` is idempotent."""

    __slots__ = ("callback", "cancelled", "due", "interval", "name")

    def __init__(self, due: float, callback: Callable[[], None], name: str, interval: float | None) -> None:
        self.due = due
        self.callback = callback
        self.name = name
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        return f"Timer({self.name!r}, due={self.due:.3f}, cancelled={self.cancelled})"


class Scheduler:
    """One heap of timers in simulated time. Callbacks are plain functions run on the event loop.

    With a real-time clock, `start()` launches the driver task that fires timers as they fall due
    (a timer added earlier than the one being waited for wakes it). With a `FakeClock`, tests call
    `advance(seconds)` instead. A callback that raises is logged and never stops the others.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    def call_later(self, delay: float, callback: Callable[[], None], *, name: str = "timer") -> Timer:
        return self._push(Timer(self._clock.monotonic() + max(0.0, delay), callback, name, None))

    def call_every(self, interval: float, callback: Callable[[], None], *, name: str = "every") -> Timer:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        return self._push(Timer(self._clock.monotonic() + interval, callback, name, interval))

    def _push(self, timer: Timer) -> Timer:
        heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
        if self._wake is not None:
            self._wake.set()
        return timer

    def next_due(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> int:
        """Fire every timer due at the clock's current time, in due order. Returns how many fired."""
        fired = 0
        now = self._clock.monotonic()
        while True:
            due = self.next_due()
            if due is None or due > now:
                return fired
            _, _, timer = heapq.heappop(self._heap)
            if timer.interval is not None:
                timer.due = due + timer.interval
                heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
            fired += 1
            try:
                timer.callback()
            except Exception:
                _log.exception("simulator timer %s failed", timer.name)

    def advance(self, seconds: float) -> int:
        """Fake clocks only: move time forward, firing each timer at its own due time."""
        clock = self._clock
        if not isinstance(clock, FakeClock):
            raise TypeError("advance() needs a FakeClock; a real-time clock advances by itself")
        if seconds < 0:
            raise ValueError("cannot advance by a negative amount")
        target = clock.monotonic() + seconds
        fired = 0
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            clock.jump_to(max(due, clock.monotonic()))
            fired += self.run_due()
        clock.jump_to(target)
        return fired + self.run_due()

    # --- the driver (real-time clocks) -------------------------------------------------------------

    def start(self) -> None:
        """Start the driver task (idempotent). Not needed, and not wanted, with a FakeClock."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._drive(), name="simulator-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._wake = None

    async def _drive(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            self.run_due()
            due = self.next_due()
            waiter = asyncio.ensure_future(wake.wait())
            sleeper = (
                asyncio.ensure_future(self._clock.sleep(due - self._clock.monotonic()))
                if due is not None else None
            )
            pending = {waiter} if sleeper is None else {waiter, sleeper}
            try:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(*pending)
