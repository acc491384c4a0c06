"""A keyed work queue: one worker per campaign, hints coalesced, keys in parallel (after kopf's queueing).

The orchestrator is level-triggered. A notification, a poll timer, a command or a failed attempt is
only a *hint* that a campaign needs a look; the handler then reads what it needs and acts on the
state as it is, not on the hint. So hints carry no payload, and the queue guarantees:

- one run per key at a time, runs of one key strictly one after another;
- hints for a key that arrive while it runs (or waits for a slot) collapse into one more run;
- keys run in parallel, at most `concurrency` handlers at once;
- `schedule(key, delay=...)` asks for a later look; the earliest request wins, and a hint (or any
  run of the key) cuts it short: a run is the look, and the handler schedules again if it must;
- a handler exception is logged with its key and the key is retried after a per-key `Backoff`
  (`retry_initial` doubling up to `retry_cap`, no jitter); it never kills the queue or another
  key's worker. A worker that crashes anyway (a defect outside the handler) is logged with its
  traceback and its key looked at again after the same backoff;
- a worker with nothing to do for `idle_timeout` retires; the next hint starts a new one;
- `close()` stops intake, lets running and already-hinted keys finish, drops pending schedules, and
  cancels what is still running after `grace` seconds.

Every worker is a task named `<name>:<key>` (default `reconcile:<campaign id>`). All waiting uses the
injected `Clock`, so a `FakeClock` runs hours of retries and schedules in milliseconds.

Lifecycle: OPEN -> CLOSING -> CLOSED. `hint` and `schedule` return False once the queue is closing,
because a late notification racing a shutdown is normal and must not raise.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .backoff import Backoff
from .ports import Clock

__all__ = ["Handler", "QueueState", "WorkQueue", "WorkQueueStats"]

Handler = Callable[[str], Awaitable[None]]
"""Looks at one key (a campaign id). Raising means "try again later", never a crash of the queue."""

_log = logging.getLogger(__name__)


class QueueState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class WorkQueueStats:
    """Gauges for metrics and the TUI."""

    workers: int  # live worker tasks (one per key with something to do or recently active)
    running: int  # handlers executing now
    pending: int  # keys hinted and not yet started (including those waiting for a slot)
    scheduled: int  # keys with a delayed look pending
    failing: int  # keys whose last run raised


class _Key:
    __slots__ = ("dirty", "due", "failures", "running", "waker", "worker")

    def __init__(self) -> None:
        self.dirty = False
        self.running = False
        self.due: float | None = None
        self.failures = 0
        self.waker: asyncio.Future[None] | None = None
        self.worker: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self.waker is not None and not self.waker.done():
            self.waker.set_result(None)


class WorkQueue:
    """Keyed, coalescing, bounded-concurrency queue of `handler(key)` runs. See the module docstring."""

    def __init__(
        self,
        handler: Handler,
        *,
        clock: Clock,
        concurrency: int = 32,
        idle_timeout: float | None = 60.0,
        retry_initial: float = 1.0,
        retry_cap: float = 60.0,
        name: str = "reconcile",
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if idle_timeout is not None:
            _check_seconds("idle_timeout", idle_timeout, allow_zero=True)
        _check_seconds("retry_initial", retry_initial, allow_zero=False)
        _check_seconds("retry_cap", retry_cap, allow_zero=False)
        if retry_cap < retry_initial:
            raise ValueError(f"retry_cap ({retry_cap}) must be >= retry_initial ({retry_initial})")
        self._handler = handler
        self._clock = clock
        self._concurrency = concurrency
        self._idle_timeout = idle_timeout
        # No jitter: what is retried is this process's own handler, not a server many clients share.
        self._retry = Backoff(retry_initial, 2.0, retry_cap, max_tries=None, jitter=0.0)
        self._name = name
        self._keys: dict[str, _Key] = {}
        self._crashes: dict[str, int] = {}  # workers of a key that crashed in a row
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: set[str] = set()  # keys dirty or running: what drain() waits for
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._state = QueueState.OPEN

    # --- intake --------------------------------------------------------------------------------

    @property
    def state(self) -> QueueState:
        return self._state

    def hint(self, key: str) -> bool:
        """Ask for a look at `key` as soon as possible. Cuts a pending schedule short."""
        if self._state is not QueueState.OPEN:
            return False
        entry = self._entry(key)
        entry.dirty = True
        self._track(key, entry)
        entry.wake()
        return True

    def schedule(self, key: str, *, delay: float | None = None, at: float | None = None) -> bool:
        """Ask for a look after `delay` seconds, or at monotonic instant `at` (exactly one of them).

        The earliest pending request wins; any run of the key before then consumes it.
        """
        if (delay is None) == (at is None):
            raise ValueError("schedule() needs exactly one of delay= or at=")
        if delay is not None:
            _check_seconds("delay", delay, allow_zero=True)
            at = self._clock.monotonic() + delay
        assert at is not None
        if not math.isfinite(at):
            raise ValueError(f"schedule(at=...) must be a finite time, got {at!r}")
        if self._state is not QueueState.OPEN:
            return False
        entry = self._entry(key)
        if entry.due is None or at < entry.due:
            entry.due = at
            entry.wake()
        return True

    def unschedule(self, key: str) -> bool:
        """Drop a pending delayed look at `key` (a hint already given still runs)."""
        entry = self._keys.get(key)
        if entry is None or entry.due is None:
            return False
        entry.due = None
        entry.wake()
        return True

    # --- observation ---------------------------------------------------------------------------

    def is_running(self, key: str) -> bool:
        entry = self._keys.get(key)
        return entry is not None and entry.running

    def is_pending(self, key: str) -> bool:
        entry = self._keys.get(key)
        return entry is not None and entry.dirty

    def due(self, key: str) -> float | None:
        """When the delayed look at `key` is due (monotonic), or None."""
        entry = self._keys.get(key)
        return None if entry is None else entry.due

    def stats(self) -> WorkQueueStats:
        entries = self._keys.values()
        return WorkQueueStats(
            workers=sum(1 for e in entries if e.worker is not None and not e.worker.done()),
            running=sum(1 for e in entries if e.running),
            pending=sum(1 for e in entries if e.dirty),
            scheduled=sum(1 for e in entries if e.due is not None),
            failing=sum(1 for e in entries if e.failures),
        )

    # --- shutdown ------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until no key is hinted or running (delayed looks may still be pending)."""
        await self._quiet.wait()

    async def close(self, *, grace: float | None = None) -> None:
        """Stop intake, finish running and hinted keys, drop schedules; cancel stragglers after
        `grace` seconds on the injected clock (None: wait for them). `asyncio.timeout` is not used
        because it runs on the loop's clock, not the injected one."""
        if self._state is QueueState.CLOSED:
            return
        self._state = QueueState.CLOSING
        for entry in self._keys.values():
            entry.due = None
            entry.wake()
        workers = {e.worker for e in self._keys.values() if e.worker is not None and not e.worker.done()}
        if workers:
            finished = await self._wait_all(workers, grace)
            if not finished:
                stragglers = [w for w in workers if not w.done()]
                _log.warning("%s: cancelling %d worker(s) still busy after %s s at shutdown",
                             self._name, len(stragglers), grace)
                for worker in stragglers:
                    worker.cancel()
                await asyncio.wait(stragglers)
        self._state = QueueState.CLOSED

    # --- the worker ----------------------------------------------------------------------------

    def _entry(self, key: str) -> _Key:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key()
        if entry.worker is None or entry.worker.done():
            entry.worker = asyncio.get_running_loop().create_task(
                self._work(key, entry), name=f"{self._name}:{key}"
            )
            entry.worker.add_done_callback(functools.partial(self._worker_done, key))
        return entry

    async def _work(self, key: str, entry: _Key) -> None:
        try:
            while True:
                if entry.dirty:
                    await self._run(key, entry)
                    continue
                if self._state is not QueueState.OPEN:
                    return
                now = self._clock.monotonic()
                if entry.due is not None and entry.due <= now:
                    entry.dirty = True
                    self._track(key, entry)
                    continue
                timeout = self._idle_timeout if entry.due is None else entry.due - now
                if await self._sleep_or_wake(key, entry, timeout):
                    continue  # woken: a hint, a new schedule or shutdown; look again
                if entry.due is None and not entry.dirty:
                    return  # idle for idle_timeout: retire
        finally:
            # Normal exits leave nothing pending; a cancelled worker (close timeout, outside cancel)
            # drops its pending look rather than leave the key busy with no one to run it.
            if entry.dirty and self._state is QueueState.OPEN:
                _log.warning("%s: worker for %s stopped with a look pending", self._name, key,
                             extra={"key": key})
            entry.dirty = False
            entry.running = False
            if self._keys.get(key) is entry:
                del self._keys[key]
            self._track(key, entry)

    async def _run(self, key: str, entry: _Key) -> None:
        async with self._slots:
            entry.dirty = False
            entry.due = None  # this run is the look that was scheduled
            entry.running = True
            try:
                await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                entry.failures += 1
                delay = self._retry.delay(entry.failures - 1)
                _log.exception("%s: handler failed for %s (failure %d in a row); retrying in %.1f s",
                               self._name, key, entry.failures, delay, extra={"key": key})
                if self._state is QueueState.OPEN:
                    retry_at = self._clock.monotonic() + delay
                    if entry.due is None or retry_at < entry.due:
                        entry.due = retry_at
            else:
                entry.failures = 0
            finally:
                entry.running = False
                self._track(key, entry)

    async def _sleep_or_wake(self, key: str, entry: _Key, seconds: float | None) -> bool:
        """Wait for a wake-up (True) or `seconds` on the clock (False; None: no limit)."""
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        entry.waker = waker
        try:
            if seconds is None:
                await waker
                return True
            sleeper = loop.create_task(self._clock.sleep(seconds), name=f"{self._name}:{key}:sleep")
            try:
                await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not sleeper.done():
                    sleeper.cancel()
                    await asyncio.wait({sleeper})
            return waker.done()
        finally:
            entry.waker = None

    def _worker_done(self, key: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            self._crashes.pop(key, None)
            return
        # A defect outside the handler (which is retried on its own). The worker dropped the key and
        # whatever look it had scheduled, so one is scheduled again after the per-key backoff.
        crashes = self._crashes[key] = self._crashes.get(key, 0) + 1
        delay = self._retry.delay(crashes - 1)
        _log.error("%s: worker %s crashed; the key is looked at again in %.1f s", self._name, task.get_name(),
                   delay, exc_info=exc, extra={"key": key})
        self.schedule(key, delay=delay)

    def _track(self, key: str, entry: _Key) -> None:
        if entry.dirty or entry.running:
            self._busy.add(key)
            self._quiet.clear()
        else:
            self._busy.discard(key)
            if not self._busy:
                self._quiet.set()

    async def _wait_all(self, tasks: set[asyncio.Task[None]], grace: float | None) -> bool:
        if grace is None:
            await asyncio.wait(tasks)
            return True
        sleeper = asyncio.get_running_loop().create_task(
            self._clock.sleep(grace), name=f"{self._name}:close-grace"
        )
        try:
            pending = set(tasks)
            while pending and not sleeper.done():
                _, pending = await asyncio.wait(pending | {sleeper}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(sleeper)
            return not pending
        finally:
            if not sleeper.done():
                sleeper.cancel()
                await asyncio.wait({sleeper})


def _check_seconds(name: str, value: float, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
