"""The tenant-wide read limiter: at most N platform reads in any sliding window, shared fairly by key.

The platform rate-limits outbound reads to 10 requests per second per tenant (guide section 3); a
burst over it is answered with 429s that, retried, exhaust the limit further. Every GET the
platform client sends first takes a grant here, so the tenant as a whole never exceeds the limit.

A strict sliding window where the platform counts. The platform counts a read when it arrives,
somewhere between the moment we send it and the moment its answer is back; how long after our
grant that is, we cannot know (a busy event loop, the network, a platform that stalls and then
takes a heap of queued requests at once). So a read taken with `reading()` holds its grant until
its answer is back, and the rule is: the grant N places after a read is allowed only
``window + margin`` after that read's answer came back. Grants are issued in order and a read
arrives after its grant, so any N+1 consecutive reads span more than one window *at the platform*,
whatever the delays: no window of that length ever holds more than N arrivals, wherever it starts.
`margin` (clock seconds) covers what is left: the platform's and our clocks running at slightly
different rates, a window closed at both ends.

Paced: no bursts either. Two grants are never closer than (window + margin)/N, so the platform
sees reads spread evenly rather than N at once and then a pause.

A grant is stamped when its waiter actually *resumes*, not when the grant task decides: under a
busy event loop many granted waiters can resume late and together, and stamps taken at decision
time would then describe reads spread out that in fact leave bunched. The grant task hands one
grant over and waits for that waiter to run before deciding the next.

Fairness. Waiters queue per key (a campaign id, a contact list or dialer id). Keys are served
round-robin: each grant goes to the oldest waiter of the key at the head of the ring, and that key
then moves to the back. One hot campaign with a hundred reads queued gets one grant per turn like
every other key, so it cannot starve the rest. An optional priority lane (interactive reads, few
by nature) is served before the ring, still within the limit.

`defer(seconds)` holds every grant back for a while: a 429 with `Retry-After` means the tenant is
over its limit (perhaps through another client), and that is true for every key, not just the
read that saw it.

Time comes from the injected `Clock`; the limiter owns one named background task that hands out
grants while waiters exist and ends when none are left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .ports import Clock

__all__ = ["ReadLimiter", "ReadLimiterClosed"]

_log = logging.getLogger(__name__)


class ReadLimiterClosed(RuntimeError):
    """`reading` on a limiter that was closed (or whose grant task died)."""


@dataclass(slots=True)
class _Grant:
    start: float  # when its waiter resumed: the read leaves after this
    end: float | None = None  # when its answer was back, the platform having counted it before; None in the air


class ReadLimiter:
    """At most `rate` grants in any `window` seconds (plus `margin`), round-robin across keys."""

    def __init__(self, clock: Clock, rate: int = 10, window: float = 1.0, margin: float = 0.0) -> None:
        if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
            raise ValueError(f"rate must be an integer >= 1, got {rate!r}")
        if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a number of seconds >= 0, got {margin!r}")
        self._clock = clock
        self._rate = rate
        self._span = float(window) + float(margin)
        self._grants: deque[_Grant] = deque(maxlen=rate)
        self._settled = asyncio.Event()  # a read in the air came back
        self._ring: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._priority: deque[asyncio.Future[None]] = deque()
        self._not_before = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._handoff: asyncio.Future[None] | None = None
        self._floor = float("-inf")
        self._closed = False
        self.granted = 0

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def waiting(self) -> int:
        """Waiters not yet granted (cancelled ones excluded)."""
        live = sum(1 for f in self._priority if not f.done())
        return live + sum(1 for q in self._ring.values() for f in q if not f.done())

    def recent(self, window: float = 1.0) -> int:
        """Grants in the last `window` seconds (the reads/s gauge); at most `rate` are remembered."""
        since = self._clock.monotonic() - window
        return sum(1 for g in self._grants if g.start > since)

    def defer(self, seconds: float) -> None:
        """Grant nothing for `seconds` from now (a 429 told the tenant to back off)."""
        if seconds > 0:
            self._not_before = max(self._not_before, self._clock.monotonic() + seconds)

    @contextlib.asynccontextmanager
    async def reading(self, key: str, *, priority: bool = False) -> AsyncIterator[None]:
        """A grant held for the whole read: send it, and have its answer, inside the block.

        The window counts the read from the moment the block ends, the latest the platform can have
        counted it; until then the grant `rate` places later waits. Cancellation-safe.
        """
        grant = await self._take(key, priority)
        try:
            yield
        finally:
            self._settle(grant)

    def _settle(self, grant: _Grant) -> None:
        grant.end = max(grant.start, self._clock.monotonic())
        self._settled.set()

    async def _take(self, key: str, priority: bool) -> _Grant:
        if self._closed:
            raise ReadLimiterClosed("the read limiter is closed")
        self._prune()
        now = self._clock.monotonic()
        if self._handoff is None and not self._priority and not self._ring and now >= self._next_free():
            return self._record(now)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if priority:
            self._priority.append(fut)
        else:
            queue = self._ring.get(key)
            if queue is None:
                queue = self._ring[key] = deque()
            queue.append(fut)
        self._ensure_task()
        try:
            await fut
        except asyncio.CancelledError:
            # Cancelled after its grant: the slot stays used (conservative, never over the limit).
            if fut.done() and not fut.cancelled():
                self._settle(self._resumed())
            raise
        return self._resumed()

    def _resumed(self) -> _Grant:
        """The granted waiter runs now: this, not the decision, is when its read leaves."""
        # Never earlier than the instant the rule allowed (a clock may wake a sleeper a hair early).
        grant = self._record(max(self._clock.monotonic(), self._floor))
        handoff, self._handoff = self._handoff, None
        if handoff is not None and not handoff.done():
            handoff.set_result(None)
        return grant

    async def aclose(self) -> None:
        """Stop granting; every waiter gets ReadLimiterClosed."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_waiters(ReadLimiterClosed("the read limiter is closed"))

    # --- internals -------------------------------------------------------------------------------

    def _next_free(self) -> float:
        """The earliest instant of the next grant; infinity while it waits for a read in the air."""
        earliest = self._not_before
        if self._grants:
            earliest = max(earliest, self._grants[-1].start + self._span / self._rate)  # paced
        if len(self._grants) == self._rate:
            oldest = self._grants[0]
            if oldest.end is None:
                return math.inf
            earliest = max(earliest, oldest.end + self._span)
        return earliest

    def _record(self, at: float) -> _Grant:
        grant = _Grant(at)
        self._grants.append(grant)
        self.granted += 1
        return grant

    def _prune(self) -> None:
        while self._priority and self._priority[0].done():
            self._priority.popleft()
        for key in [k for k, q in self._ring.items() if all(f.done() for f in q)]:
            del self._ring[key]

    def _next_waiter(self) -> asyncio.Future[None] | None:
        while self._priority:
            fut = self._priority.popleft()
            if not fut.done():
                return fut
        while self._ring:
            key, queue = next(iter(self._ring.items()))
            found: asyncio.Future[None] | None = None
            while queue:
                candidate = queue.popleft()
                if not candidate.done():
                    found = candidate
                    break
            if queue:
                self._ring.move_to_end(key)
            else:
                del self._ring[key]
            if found is not None:
                return found
        return None

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._grant_loop(), name="read-limiter")
            self._task.add_done_callback(self._task_done)

    async def _grant_loop(self) -> None:
        while True:
            self._prune()
            if not self._priority and not self._ring:
                return
            wait = self._next_free() - self._clock.monotonic()
            if wait == math.inf:
                self._settled.clear()
                await self._settled.wait()
                continue
            if wait > 0:
                await self._clock.sleep(wait)
                continue
            fut = self._next_waiter()
            if fut is None:
                return
            self._floor = self._next_free()
            self._handoff = asyncio.get_running_loop().create_future()
            handoff = self._handoff
            fut.set_result(None)
            await handoff

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task is self._task:
            self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Nothing may hang on a dead grant task: fail the waiters, the next acquire restarts it.
            _log.error("read limiter grant task died", exc_info=exc)
            self._fail_waiters(ReadLimiterClosed(f"the read limiter's grant task died: {exc!r}"))

    def _fail_waiters(self, exc: BaseException) -> None:
        for fut in list(self._priority) + [f for q in self._ring.values() for f in q]:
            if not fut.done():
                fut.set_exception(exc)
        self._priority.clear()
        self._ring.clear()

    def __repr__(self) -> str:
        return f"ReadLimiter(rate={self._rate}, span={self._span}, waiting={self.waiting})"
