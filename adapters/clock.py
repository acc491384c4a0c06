"""Time for the running service: the real `Clock`, optionally scaled.

The core never reads time itself; it is handed a `Clock` (fsm/ports.py). `SystemClock` is the real
one: `time.time`, `time.monotonic`, `asyncio.sleep`. With `time_scale=k` every clock second lasts
1/k real seconds, so a service and the simulator built with the same factor agree on how long a
predictive drain or a 24 h channel lifetime is while the test runs k times faster.

Tests use `fsm.testing.FakeClock` instead: virtual time, so hours of backoff run in milliseconds.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["SystemClock"]


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
