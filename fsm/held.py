"""A held command's lifecycle, and the dialer slot as a lease.

A command the state gate accepted is *held* until its POST: pre-flight (contact list, dialer load),
then the dialer's queue, then the request. `HeldCommand` is that lifecycle as a frozen value; each
step returns the next value, so a stage can never be half-changed::

    PREFLIGHT --proceed--> QUEUED --granted--> GRANTED --sending--> SENT
        ^                    |                    |
        +------deferred------+--------------------+   (a check right before the POST failed)

SENT means the request may have left: from there only reading the platform is allowed.

`SlotLease` is one transition's claim on its dialer (guide, edge case 2: two in flight per dialer):
taken once, bound to the dialer key it was asked on (so a campaign whose dialer changes meanwhile
still gives it back where it was taken), given back from one place, idempotently. A slot the
dialer's policy grants at once is taken at once (the look that asked goes on to the POST); otherwise
a task waits for it, named after the campaign and supervised: a failure is logged, never silent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from schemas.commands import Command
from schemas.types import Priority, ReasonCode

from .backoff import Backoff
from .dialer_queue import DialerGate, GateClosed
from .machine import Decision

__all__ = ["HeldCommand", "SlotLease", "Stage"]

_log = logging.getLogger(__name__)
# Asking a dialer for a slot again after the gate failed (a defect), rather than wait for good.
_ASK_AGAIN = Backoff(1.0, 2.0, 60.0, max_tries=None, jitter=0.0)


class Stage(Enum):
    PREFLIGHT = "preflight"  # waiting for its contact list and dialer load to allow it
    QUEUED = "queued"  # waiting in the dialer's priority queue for a slot
    GRANTED = "granted"  # holds a slot; the POST goes next (or again, after a 429)
    SENT = "sent"  # the POST may have left: its outcome is learnt by reading, never by re-sending


@dataclass(frozen=True, slots=True)
class HeldCommand:
    command: Command
    stage: Stage = Stage.PREFLIGHT
    deferred_at: float | None = None
    deferral: ReasonCode | None = None
    next_check: float | None = None  # pre-flight's next attempt, or the end of a 429's Retry-After
    poked: bool = True  # a notification (or arrival) asks for a pre-flight before `next_check`
    rate_limited: int = 0  # POSTs answered 429 (not executed) so far
    # The machine's accepted decision for it, applied as it stands once the POST was taken; judged
    # again only if the campaign moved since (its sequence changed), or after a restart (None).
    decision: Decision | None = None

    @property
    def command_id(self) -> str:
        return str(self.command.id)

    def due(self, now: float) -> bool:
        """Whether a look at `now` should move it (a pre-flight or a POST), rather than wait."""
        if self.stage is Stage.PREFLIGHT:
            return self.poked or self.next_check is None or now >= self.next_check
        if self.stage is Stage.GRANTED:
            return self.next_check is None or now >= self.next_check
        return self.stage is Stage.SENT

    def judged(self, decision: Decision) -> HeldCommand:
        return dataclasses.replace(self, decision=decision)

    def looked(self) -> HeldCommand:
        return dataclasses.replace(self, poked=False)

    def poke(self) -> HeldCommand:
        return dataclasses.replace(self, poked=True)

    def proceed(self) -> HeldCommand:
        return dataclasses.replace(self, stage=Stage.QUEUED, next_check=None)

    def granted(self) -> HeldCommand:
        return dataclasses.replace(self, stage=Stage.GRANTED)

    def sending(self) -> HeldCommand:
        return dataclasses.replace(self, stage=Stage.SENT)

    def deferred(self, reason: ReasonCode | None, now: float, retry_at: float | None) -> HeldCommand:
        return dataclasses.replace(self, stage=Stage.PREFLIGHT, deferral=reason, next_check=retry_at,
                                   deferred_at=self.deferred_at if self.deferred_at is not None else now)

    def rate_limited_until(self, retry_at: float) -> HeldCommand:
        return dataclasses.replace(self, stage=Stage.GRANTED, next_check=retry_at, rate_limited=self.rate_limited + 1)


class SlotLease:
    """One transition's slot on its dialer: asked for at construction, given back by `release`."""

    __slots__ = ("_gate", "_item", "_released", "_task", "dialer", "granted")

    def __init__(self, gate: DialerGate[str], dialer: str, item: str, priority: Priority,
                 on_granted: Callable[[], None] | None = None) -> None:
        self._gate = gate
        self.dialer = dialer
        self._item = item
        self._released = False
        self._task: asyncio.Task[None] | None = None
        self.granted = gate.try_acquire(dialer, item, priority)
        if not self.granted:
            self._task = asyncio.create_task(self._acquire(priority, on_granted), name=f"dialer-slot:{item}")
            self._task.add_done_callback(_log_failure)

    async def _acquire(self, priority: Priority, on_granted: Callable[[], None] | None) -> None:
        failures = 0
        while True:
            try:
                await self._gate.acquire(self.dialer, self._item, priority)
                break
            except GateClosed:
                return
            except Exception:
                failures += 1
                delay = _ASK_AGAIN.delay(failures - 1)
                _log.exception("dialer-slot:%s: asking dialer %s for a slot failed; asking again in %.0f s",
                               self._item, self.dialer, delay)
                await self._gate.clock.sleep(delay)
        self.granted = True
        if on_granted is not None:
            on_granted()

    def sent(self) -> None:
        """The transition's request left: the dialer's STANDARD spacing counts from now."""
        if self.granted and not self._released:
            self._gate.sent(self.dialer, self._item)

    def release(self) -> None:
        """Give the slot (or the place in the queue) back, to the dialer it was taken on. Idempotent."""
        if self._released:
            return
        self._released = True
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the gate gives back a slot dispatched just before the cancel
        elif self.granted:
            self._gate.release(self.dialer, self._item)

    async def wait_closed(self) -> None:
        self.release()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
