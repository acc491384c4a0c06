"""The request budget of one OAuth client: at most `limit` platform requests in any sliding `window`.

Each profile has its own budget (adapters/platform/client.py chooses what spends from it):

- genesys: 300 requests per 60 s per client-credentials token, every method counted (GET, POST,
  PUT, DELETE, notification-channel calls); `client.credentials.token.rate.per.minute`;
- guide: 10 reads per second per tenant (guide section 3); only GETs spend.

A burst over it is answered with 429s that, retried, exhaust the limit further. Every request that
spends first takes a grant here, so the client as a whole never exceeds the limit.

A strict sliding window where the platform counts. The platform counts a request when it arrives,
somewhere between the moment we send it and the moment its answer is back; how long after our
grant that is, we cannot know (a busy event loop, the network, a platform that stalls and then
takes a heap of queued requests at once). So a request taken with `spend()` holds its grant until
its answer is back, and the rule is: the grant N places after a request is allowed only
``window + margin`` after that request's answer came back. Grants are issued in order and a request
arrives after its grant, so any N+1 consecutive requests span more than one window *at the
platform*, whatever the delays: no window of that length ever holds more than N arrivals, wherever
it starts. `margin` (clock seconds) covers what is left: the platform's and our clocks running at
slightly different rates, a window closed at both ends.

Paced: no bursts either. Two grants are never closer than (window + margin)/N, so the platform
sees requests spread evenly rather than N at once and then a pause.

A grant is stamped when its waiter actually *resumes*, not when the grant task decides: under a
busy event loop many granted waiters can resume late and together, and stamps taken at decision
time would then describe requests spread out that in fact leave bunched. The grant task hands one
grant over and waits for that waiter to run before deciding the next.

Fairness. Waiters queue per key (a campaign id, a contact list or dialer id). Keys are served
round-robin: each grant goes to the oldest waiter of the key at the head of the ring, and that key
then moves to the back. One hot campaign with a hundred reads queued gets one grant per turn like
every other key, so it cannot starve the rest. An optional priority lane (writes and interactive
reads, few by nature) is served before the ring, still within the limit.

Resynchronising with the platform. Genesys answers `inin-ratelimit-count` (requests it counted for
this client in its current window), `-allowed` (the limit) and `-reset` (seconds until that window
ends). Those count every requester of the OAuth client, other instances included, so `resync`
turns them into a cap: until the platform's window ends, at most `allowed - count - uncounted`
more grants, where `uncounted` are our grants the platform may not have seen when it counted (those
issued after the answered one, and those before it still in the air). The cap only ever holds
grants back; the local window still applies.

`defer(seconds)` holds every grant back for a while: a 429 with `Retry-After` means the client is
over its limit (perhaps through another instance), and that is true for every key.

`set_limit(n)` changes the limit in place; the rule then applies to the newest `n` grants. Instances
sharing one OAuth client share its budget by their shares of the commands topic's partitions
(`share_of`, set on every consumer-group assignment): the protocol is eager (every member gives up
everything before the new shares are handed out), so shares never overlap, and a dead instance's
partitions, with its part of the budget, go to the others on the rebalance that follows. The
headers (`resync`) catch what the split cannot: another requester of the same client.

Time comes from the injected `Clock`; the budget owns one named background task that hands out
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
from .tasks import cancel_and_wait

__all__ = ["Grant", "RequestBudget", "RequestBudgetClosed", "share_of"]

_log = logging.getLogger(__name__)


class RequestBudgetClosed(RuntimeError):
    """`spend` on a budget that was closed (or whose grant task died)."""


@dataclass(slots=True)
class Grant:
    """One request's place in the budget: hand it to `resync` with the answer's rate-limit headers."""

    start: float  # when its waiter resumed: the request leaves after this
    seq: int  # 1 for the budget's first grant
    end: float | None = None  # when its answer was back, the platform having counted it before; None in the air


@dataclass(slots=True)
class _Cap:
    """What the platform's headers leave us: `left` more grants until `until` (its window's end)."""

    until: float
    left: int


class RequestBudget:
    """At most `limit` grants in any `window` seconds (plus `margin`), round-robin across keys."""

    def __init__(self, clock: Clock, limit: int = 10, window: float = 1.0, margin: float = 0.0) -> None:
        _check_limit(limit)
        if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a number of seconds >= 0, got {margin!r}")
        self._clock = clock
        self._limit = limit
        self._window = float(window)
        self._span = float(window) + float(margin)
        self._grants: deque[Grant] = deque(maxlen=limit)
        self._settled = asyncio.Event()  # a request in the air came back
        self._ring: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._priority: deque[asyncio.Future[None]] = deque()
        self._not_before = -math.inf
        self._cap: _Cap | None = None
        self._task: asyncio.Task[None] | None = None
        self._handoff: asyncio.Future[None] | None = None
        self._floor = float("-inf")
        self._closed = False
        self.granted = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    @property
    def waiting(self) -> int:
        """Waiters not yet granted (cancelled ones excluded)."""
        live = sum(1 for f in self._priority if not f.done())
        return live + sum(1 for q in self._ring.values() for f in q if not f.done())

    def recent(self, window: float | None = None) -> int:
        """Grants in the last `window` seconds (default: the budget's); at most `limit` are remembered."""
        since = self._clock.monotonic() - (self._window if window is None else window)
        return sum(1 for g in self._grants if g.start > since)

    def free_now(self) -> bool:
        """Whether a request asked for now would be granted at once (no one waits, the window has room)."""
        self._prune()
        return (self._handoff is None and not self._priority and not self._ring
                and self._clock.monotonic() >= self._next_free())

    def defer(self, seconds: float) -> None:
        """Grant nothing for `seconds` from now (a 429 told the client to back off)."""
        if seconds > 0:
            self._not_before = max(self._not_before, self._clock.monotonic() + seconds)

    def set_limit(self, limit: int) -> None:
        """A new limit from now on (this instance's share changed); the rule holds for the newest grants."""
        _check_limit(limit)
        if limit != self._limit:
            self._limit = limit
            self._grants = deque(self._grants, maxlen=limit)

    def resync(self, grant: Grant, *, count: int, allowed: int, reset_after: float) -> None:
        """The platform's own count, from the answer to `grant`'s request (see the module docstring)."""
        if count < 0 or allowed < 0 or not math.isfinite(reset_after) or reset_after < 0:
            return  # headers that make no sense are not a reason to stop or to speed up
        in_air = sum(1 for g in self._grants if g.end is None and g.seq < grant.seq)
        uncounted = (self.granted - grant.seq) + in_air
        self._cap = _Cap(self._clock.monotonic() + reset_after, max(0, allowed - count - uncounted))

    @contextlib.asynccontextmanager
    async def spend(self, key: str, *, priority: bool = False) -> AsyncIterator[Grant]:
        """A grant held for the whole request: send it, and have its answer, inside the block.

        The window counts the request from the moment the block ends, the latest the platform can
        have counted it; until then the grant `limit` places later waits. Cancellation-safe.
        """
        grant = await self._take(key, priority)
        try:
            yield grant
        finally:
            self._settle(grant)

    def _settle(self, grant: Grant) -> None:
        grant.end = max(grant.start, self._clock.monotonic())
        self._settled.set()

    async def _take(self, key: str, priority: bool) -> Grant:
        if self._closed:
            raise RequestBudgetClosed("the request budget is closed")
        if self.free_now():
            return self._record(self._clock.monotonic())
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

    def _resumed(self) -> Grant:
        """The granted waiter runs now: this, not the decision, is when its request leaves."""
        # Never earlier than the instant the rule allowed (a clock may wake a sleeper a hair early).
        grant = self._record(max(self._clock.monotonic(), self._floor))
        handoff, self._handoff = self._handoff, None
        if handoff is not None and not handoff.done():
            handoff.set_result(None)
        return grant

    async def aclose(self) -> None:
        """Stop granting; every waiter gets RequestBudgetClosed."""
        self._closed = True
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._fail_waiters(RequestBudgetClosed("the request budget is closed"))

    # --- internals -------------------------------------------------------------------------------

    def _next_free(self) -> float:
        """The earliest instant of the next grant; infinity while it waits for a request in the air."""
        earliest = self._not_before
        cap = self._cap
        if cap is not None:
            if self._clock.monotonic() >= cap.until:
                self._cap = None
            elif cap.left <= 0:
                earliest = max(earliest, cap.until)
        if self._grants:
            earliest = max(earliest, self._grants[-1].start + self._span / self._limit)  # paced
        if len(self._grants) == self._limit:
            oldest = self._grants[0]
            if oldest.end is None:
                return math.inf
            earliest = max(earliest, oldest.end + self._span)
        return earliest

    def _record(self, at: float) -> Grant:
        self.granted += 1
        grant = Grant(at, self.granted)
        self._grants.append(grant)
        if self._cap is not None:
            self._cap.left -= 1
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
            self._task = asyncio.get_running_loop().create_task(self._grant_loop(), name="request-budget")
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
            _log.error("request budget grant task died", exc_info=exc)
            self._fail_waiters(RequestBudgetClosed(f"the request budget's grant task died: {exc!r}"))

    def _fail_waiters(self, exc: BaseException) -> None:
        for fut in list(self._priority) + [f for q in self._ring.values() for f in q]:
            if not fut.done():
                fut.set_exception(exc)
        self._priority.clear()
        self._ring.clear()

    def __repr__(self) -> str:
        return f"RequestBudget(limit={self._limit}, span={self._span}, waiting={self.waiting})"


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")


def share_of(limit: int, owned: int, total: int) -> int:
    """One instance's part of a budget of `limit` shared by partition: `limit * owned / total`, rounded
    down so the parts never add up to more than the whole; at least 1 (notification calls go on)."""
    if total < 1 or owned < 0:
        raise ValueError(f"owned must be >= 0 and total >= 1, got {owned} of {total}")
    return max(1, limit * min(owned, total) // total)
