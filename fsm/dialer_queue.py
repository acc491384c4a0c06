"""The per-dialer transition semaphore and priority queue (guide, edge case 2).

A predictive dialer serializes state changes of every campaign it serves; more than a few at once
and the platform answers 409 or 500. So transitions are grouped by dialer instance:

- at most `max_in_flight` (2) transitions in flight per dialer; a slot is taken when a transition is
  dispatched and given back with `release` (when it reaches a terminal state, or its request failed);
- HIGH priority (compliance-critical, revenue) goes first, as soon as a slot is free;
- STANDARD is staggered: two STANDARD requests on one dialer leave at least `standard_spacing` (15 s)
  apart, measured between requests *as sent*: a STANDARD item is dispatched no earlier than the
  spacing after the previous one's `sent` (or its dispatch, if later), and not while a dispatched
  STANDARD item has not been sent yet (reads before the POST may delay it by any amount). HIGH
  dispatches neither wait for nor reset that spacing;
- first in, first out within a priority; dialers never wait for each other.

Three layers, the lower ones pure:

- `DialerQueue`: one dialer's policy. It never sleeps and never reads a clock: callers pass `now`
  and get decisions back (`next_ready` pops the item to dispatch, `when_next` says when to ask again).
- `DialerQueues`: the registry of all dialers' queues, created on first use.
- `DialerGate`: the asyncio face. `acquire` waits (on the injected `Clock`) until the policy
  dispatches the item; a `release` or the end of a stagger wakes the next waiter.

Items are any hashable token naming one transition (a campaign id, a command id).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from schemas.types import Priority

from .backoff import Backoff
from .ports import Clock
from .tasks import cancel_and_wait

__all__ = ["DialerGate", "DialerPolicy", "DialerQueue", "DialerQueues", "DialerStats", "GateClosed"]

_log = logging.getLogger(__name__)
_TIMER_RETRY = Backoff(1.0, 2.0, 60.0, max_tries=None, jitter=0.0)

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True, slots=True)
class DialerPolicy:
    """Per-dialer limits: slots in flight, and the minimum gap between two STANDARD dispatches."""

    max_in_flight: int = 2
    standard_spacing: float = 15.0

    def __post_init__(self) -> None:
        if isinstance(self.max_in_flight, bool) or not isinstance(self.max_in_flight, int) \
                or self.max_in_flight < 1:
            raise ValueError(
                f"DialerPolicy.max_in_flight must be an integer >= 1, got {self.max_in_flight!r}"
            )
        if not isinstance(self.standard_spacing, int | float) or not math.isfinite(self.standard_spacing) \
                or self.standard_spacing < 0:
            raise ValueError(
                f"DialerPolicy.standard_spacing must be a finite number >= 0, got {self.standard_spacing!r}"
            )


@dataclass(frozen=True, slots=True)
class DialerStats:
    """One dialer's gauges, for metrics and the TUI."""

    dialer_id: str
    in_flight: int
    queued_high: int
    queued_standard: int
    last_standard_at: float | None
    oldest_queued_at: float | None

    @property
    def depth(self) -> int:
        return self.queued_high + self.queued_standard


class DialerQueue(Generic[T]):
    """One dialer's semaphore and priority queue, as a pure policy over `now` (monotonic seconds)."""

    __slots__ = ("_in_flight", "_last_standard", "_policy", "_queued", "_queues", "_unsent", "dialer_id")

    def __init__(self, dialer_id: str, policy: DialerPolicy | None = None) -> None:
        self.dialer_id = dialer_id
        self._policy = policy or DialerPolicy()
        self._queues: dict[Priority, deque[tuple[T, float]]] = {p: deque() for p in (Priority.HIGH,
                                                                                    Priority.STANDARD)}
        self._queued: dict[T, Priority] = {}
        self._in_flight: set[T] = set()
        self._last_standard: float | None = None
        self._unsent: set[T] = set()  # STANDARD items dispatched whose request has not left yet

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def depth(self) -> int:
        return len(self._queued)

    def offer(self, item: T, priority: Priority, now: float) -> None:
        """Queue a transition. An item already queued or in flight is a caller bug: ValueError."""
        priority = Priority(priority)
        if item in self._queued:
            raise ValueError(f"{item!r} is already queued on dialer {self.dialer_id}")
        if item in self._in_flight:
            raise ValueError(f"{item!r} is already in flight on dialer {self.dialer_id}")
        self._queues[priority].append((item, now))
        self._queued[item] = priority

    def withdraw(self, item: T) -> bool:
        """Take a queued item back (expired, cancelled). False if it was not queued."""
        priority = self._queued.pop(item, None)
        if priority is None:
            return False
        queue = self._queues[priority]
        for index, (queued, _) in enumerate(queue):
            if queued == item:
                del queue[index]
                break
        return True

    def next_ready(self, now: float) -> T | None:
        """The item to dispatch now, moved to in flight; None if nothing may go yet."""
        if len(self._in_flight) >= self._policy.max_in_flight:
            return None
        high = self._queues[Priority.HIGH]
        if high:
            return self._dispatch(high.popleft()[0])
        standard = self._queues[Priority.STANDARD]
        if standard and not self._waiting_for_send() and self._standard_due(now) <= now:
            self._last_standard = now
            item = self._dispatch(standard.popleft()[0])
            self._unsent.add(item)
            return item
        return None

    def sent(self, item: T, now: float) -> None:
        """The dispatched item's request left at `now`: the next STANDARD is spaced from here."""
        if item in self._unsent:
            self._unsent.discard(item)
            self._last_standard = max(self._last_standard or now, now)

    def ready(self, now: float) -> list[T]:
        """Every item that may be dispatched now, in dispatch order (all moved to in flight)."""
        items: list[T] = []
        while (item := self.next_ready(now)) is not None:
            items.append(item)
        return items

    def when_next(self, now: float) -> float | None:
        """When to ask `next_ready` again: `now` if something may go now, a later instant if the
        STANDARD stagger holds the head back, None if nothing is queued or every slot is taken
        (only an `offer` or a `release` can change that)."""
        if not self._queued or len(self._in_flight) >= self._policy.max_in_flight:
            return None
        if self._queues[Priority.HIGH]:
            return now
        if self._waiting_for_send():
            return None  # only its `sent` or `release` lets the next STANDARD go
        return max(now, self._standard_due(now))

    def release(self, item: T) -> bool:
        """Give back the slot of a finished (terminal or failed) transition. False if not in flight,
        so a second release of the same transition is harmless."""
        if item in self._in_flight:
            self._in_flight.discard(item)
            self._unsent.discard(item)
            return True
        return False

    def stats(self) -> DialerStats:
        heads = [q[0][1] for q in self._queues.values() if q]
        return DialerStats(
            dialer_id=self.dialer_id,
            in_flight=len(self._in_flight),
            queued_high=len(self._queues[Priority.HIGH]),
            queued_standard=len(self._queues[Priority.STANDARD]),
            last_standard_at=self._last_standard,
            oldest_queued_at=min(heads) if heads else None,
        )

    def __repr__(self) -> str:
        return (f"DialerQueue({self.dialer_id!r}, in_flight={len(self._in_flight)}/"
                f"{self._policy.max_in_flight}, queued={len(self._queued)})")

    def _waiting_for_send(self) -> bool:
        return bool(self._unsent) and self._policy.standard_spacing > 0

    def _standard_due(self, now: float) -> float:
        if self._last_standard is None:
            return now
        return self._last_standard + self._policy.standard_spacing

    def _dispatch(self, item: T) -> T:
        del self._queued[item]
        self._in_flight.add(item)
        return item


class DialerQueues(Generic[T]):
    """Every dialer's queue, keyed by dialer instance id. Queues are independent of each other."""

    __slots__ = ("_policy", "_queues")

    def __init__(self, policy: DialerPolicy | None = None) -> None:
        self._policy = policy or DialerPolicy()
        self._queues: dict[str, DialerQueue[T]] = {}

    def queue(self, dialer_id: str) -> DialerQueue[T]:
        queue = self._queues.get(dialer_id)
        if queue is None:
            queue = self._queues[dialer_id] = DialerQueue(dialer_id, self._policy)
        return queue

    def offer(self, dialer_id: str, item: T, priority: Priority, now: float) -> None:
        self.queue(dialer_id).offer(item, priority, now)

    def withdraw(self, dialer_id: str, item: T) -> bool:
        queue = self._queues.get(dialer_id)
        return queue is not None and queue.withdraw(item)

    def release(self, dialer_id: str, item: T) -> bool:
        queue = self._queues.get(dialer_id)
        return queue is not None and queue.release(item)

    def sent(self, dialer_id: str, item: T, now: float) -> None:
        queue = self._queues.get(dialer_id)
        if queue is not None:
            queue.sent(item, now)

    def ready(self, now: float) -> list[tuple[str, T]]:
        """Every (dialer id, item) that may be dispatched now, all moved to in flight."""
        return [(dialer_id, item) for dialer_id, queue in self._queues.items() for item in queue.ready(now)]

    def when_next(self, now: float) -> float | None:
        """The earliest `when_next` over all dialers (None: wait for an offer or a release)."""
        times = [t for q in self._queues.values() if (t := q.when_next(now)) is not None]
        return min(times) if times else None

    def stats(self) -> list[DialerStats]:
        return [q.stats() for q in self._queues.values()]

    def __contains__(self, dialer_id: object) -> bool:
        return dialer_id in self._queues

    def __len__(self) -> int:
        return len(self._queues)


class GateClosed(RuntimeError):
    """The gate was closed while a transition waited for its dialer slot."""


class DialerGate(Generic[T]):
    """Waits, on the injected clock, until a dialer's policy dispatches a transition.

    `acquire` returns once the item holds one of its dialer's slots; the caller then sends the
    request and calls `release` when the transition is over. One timer task per dialer, named
    `dialer-stagger:<id>`, exists only while a STANDARD stagger holds back a dispatch.
    """

    def __init__(self, clock: Clock, policy: DialerPolicy | None = None) -> None:
        self._clock = clock
        self._queues: DialerQueues[T] = DialerQueues(policy)
        self._waiters: dict[tuple[str, T], asyncio.Future[None]] = {}
        self._timers: dict[str, tuple[float, asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # armed and cancelled timers, until they finish
        self._deaths: dict[str, int] = {}  # timers of a dialer that died in a row
        self._closed = False

    @property
    def clock(self) -> Clock:
        return self._clock

    def stats(self) -> list[DialerStats]:
        return self._queues.stats()

    async def acquire(self, dialer_id: str, item: T, priority: Priority) -> None:
        """Wait until `item` holds a slot on `dialer_id`. Cancelling gives the place (or slot) back."""
        if self._closed:
            raise GateClosed("the dialer gate is closed")
        queue = self._queues.queue(dialer_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.offer(item, priority, self._clock.monotonic())
        key = (dialer_id, item)
        self._waiters[key] = future
        try:
            self._pump(dialer_id)
            await future
        except BaseException:
            # Cancelled while queued: leave the queue. Cancelled just after being dispatched: the
            # caller will never release, so give the slot back here.
            dispatched = future.done() and not future.cancelled() and future.exception() is None
            if not queue.withdraw(item) and dispatched:
                queue.release(item)
            self._pump(dialer_id)
            raise
        finally:
            self._waiters.pop(key, None)

    def try_acquire(self, dialer_id: str, item: T, priority: Priority) -> bool:
        """Take a slot for `item` now if the policy dispatches it now (exactly as `acquire` would,
        queue order and stagger included); False, leaving nothing queued, if it would have to wait."""
        if self._closed:
            return False
        queue = self._queues.queue(dialer_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.offer(item, priority, self._clock.monotonic())
        key = (dialer_id, item)
        self._waiters[key] = future
        try:
            self._pump(dialer_id)
        finally:
            self._waiters.pop(key, None)
        if future.done():
            return True
        queue.withdraw(item)
        self._pump(dialer_id)
        return False

    def sent(self, dialer_id: str, item: T) -> None:
        """The item's request has left for the platform: the STANDARD spacing counts from now."""
        self._queues.sent(dialer_id, item, self._clock.monotonic())
        if not self._closed:
            self._pump(dialer_id)

    def release(self, dialer_id: str, item: T) -> bool:
        """The transition is over (terminal state or failed request): free its slot."""
        released = self._queues.release(dialer_id, item)
        if released and not self._closed:
            self._pump(dialer_id)
        return released

    @contextlib.asynccontextmanager
    async def slot(self, dialer_id: str, item: T, priority: Priority) -> AsyncIterator[None]:
        """`acquire` ... `release` around a block (for a slot held only around the request)."""
        await self.acquire(dialer_id, item, priority)
        try:
            yield
        finally:
            self.release(dialer_id, item)

    async def close(self) -> None:
        """Fail every waiter with GateClosed and stop the stagger timers."""
        self._closed = True
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(GateClosed("the dialer gate closed while waiting for a slot"))
        self._timers.clear()
        await cancel_and_wait(*self._tasks)

    # --- internals -----------------------------------------------------------------------------

    def _pump(self, dialer_id: str) -> None:
        queue = self._queues.queue(dialer_id)
        now = self._clock.monotonic()
        while (item := queue.next_ready(now)) is not None:
            future = self._waiters.get((dialer_id, item))
            if future is None or future.done():
                queue.release(item)  # nobody waits for it any more: never leak the slot
                continue
            future.set_result(None)
        self._arm(dialer_id, queue.when_next(now), now)

    def _arm(self, dialer_id: str, wake: float | None, now: float) -> None:
        current = self._timers.get(dialer_id)
        if current is not None and wake is not None and current[0] == wake:
            return
        if current is not None:
            current[1].cancel()
            del self._timers[dialer_id]
        if wake is None or self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._stagger_timer(dialer_id, wake - now), name=f"dialer-stagger:{dialer_id}"
        )
        self._timers[dialer_id] = (wake, task)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._timer_done, dialer_id))

    def _timer_done(self, dialer_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            self._deaths.pop(dialer_id, None)
            return
        # A defect. Without a timer nothing wakes the dialer's waiters until a slot is freed, so
        # the dialer is looked at again after a backoff.
        if (current := self._timers.get(dialer_id)) is not None and current[1] is task:
            del self._timers[dialer_id]
        deaths = self._deaths[dialer_id] = self._deaths.get(dialer_id, 0) + 1
        delay = _TIMER_RETRY.delay(deaths - 1)
        _log.error("%s died; the dialer is looked at again in %.0f s", task.get_name(), delay, exc_info=error)
        if not self._closed:
            now = self._clock.monotonic()
            self._arm(dialer_id, now + delay, now)

    async def _stagger_timer(self, dialer_id: str, delay: float) -> None:
        await self._clock.sleep(delay)
        current = self._timers.get(dialer_id)
        if current is not None and current[1] is asyncio.current_task():
            del self._timers[dialer_id]
        self._pump(dialer_id)
