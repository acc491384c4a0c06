"""Simulated time: a scaled real clock, a manual clock for tests, and the timer wheel that moves the tenant.

Everything the simulated platform does on its own schedule (a campaign finishing STARTING, a
heartbeat, a channel expiring, a socket closing after its warning) is a timer on one `Scheduler`,
read against an injected clock in *simulated* seconds:

* `ScaledClock(scale)` runs `scale` times faster than real time (100 => a 120 s drain takes 1.2 s),
  and the scheduler's background driver fires timers as they fall due;
* `ManualClock` stands still until a test calls `Scheduler.advance(seconds)`, which steps the clock
  to each due timer in order and fires it, so a unit test is deterministic and instant.

Both satisfy `fsm.ports.Clock` (`now`, `monotonic`, `sleep`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["ManualClock", "ScaledClock", "Scheduler", "SimClock", "Timer"]

_log = logging.getLogger(__name__)


class SimClock(Protocol):
    """Simulated time. `monotonic()` orders timers; `now()` is the simulated epoch time.

    `wall_deadline(d)` is the real epoch time at which `d` simulated seconds will have passed (what a
    client comparing with its own wall clock needs, e.g. a channel's `expires`).
    """

    @property
    def scale(self) -> float: ...

    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def wall_deadline(self, seconds: float) -> float: ...


class ScaledClock:
    """Real time multiplied by `scale` (>0): simulated seconds pass `scale` times faster."""

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"time scale must be > 0, got {scale!r}")
        self._scale = float(scale)
        self._real0 = time.monotonic()
        self._epoch0 = time.time()

    @property
    def scale(self) -> float:
        return self._scale

    def monotonic(self) -> float:
        return (time.monotonic() - self._real0) * self._scale

    def now(self) -> float:
        return self._epoch0 + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)

    def wall_deadline(self, seconds: float) -> float:
        return time.time() + seconds / self._scale

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self._scale})"


class ManualClock:
    """A clock that moves only when told. `sleep` returns once the clock has been moved far enough."""

    scale = 1.0

    def __init__(self, start: float = 0.0, epoch: float = 1_700_000_000.0) -> None:
        self._t = float(start)
        self._epoch = float(epoch)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._t

    def now(self) -> float:
        return self._epoch + self._t

    def wall_deadline(self, seconds: float) -> float:
        return self.now() + seconds

    def set(self, t: float) -> None:
        """Move to simulated time `t` (never backwards) and wake the sleepers now due."""
        if t < self._t:
            raise ValueError(f"a clock never goes back: {t} < {self._t}")
        self._t = t
        while self._sleepers and self._sleepers[0][0] <= t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._t + seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    def __repr__(self) -> str:
        return f"ManualClock(t={self._t})"


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
    (a timer added earlier than the one being waited for wakes it). With a `ManualClock`, tests call
    `advance(seconds)` instead. A callback that raises is logged and never stops the others.
    """

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def clock(self) -> SimClock:
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
        """Manual clocks only: move time forward, firing each timer at its own due time."""
        clock = self._clock
        if not isinstance(clock, ManualClock):
            raise TypeError("advance() needs a ManualClock; a real-time clock advances by itself")
        if seconds < 0:
            raise ValueError("cannot advance by a negative amount")
        target = clock.monotonic() + seconds
        fired = 0
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            clock.set(max(due, clock.monotonic()))
            fired += self.run_due()
        clock.set(target)
        return fired + self.run_due()

    # --- the driver (real-time clocks) -------------------------------------------------------------

    def start(self) -> None:
        """Start the driver task (idempotent). Not needed, and not wanted, with a ManualClock."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._drive(), name="simulator-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
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
                for fut in pending:
                    fut.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
