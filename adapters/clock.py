"""Real time, optionally scaled: the one `Clock` of the service and of the simulator.

The core never reads time itself; it is handed a `Clock` (fsm/ports.py). `SystemClock` is the real
one: `time.time`, `time.monotonic`, `asyncio.sleep`. With `time_scale=k` every clock second lasts
1/k real seconds, so a service and the simulator built with the same factor agree on how long a
predictive drain or a 24 h channel lifetime is while the test runs k times faster.

`start` sets what `monotonic()` reads at construction: by default the real monotonic clock (so an
unscaled clock *is* `time.monotonic`); the simulator passes 0, so its times read as simulated
seconds since it started.

Tests use `fsm.testing.FakeClock` instead: virtual time, so hours of backoff run in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import time

__all__ = ["SystemClock"]


class SystemClock:
    """The real clock. `time_scale` > 1 runs clock time faster than real time."""

    __slots__ = ("_mono0", "_scale", "_start", "_wall0")

    def __init__(self, time_scale: float = 1.0, *, start: float | None = None) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if start is not None and not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._scale = float(time_scale)
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self._start = None if start is None else float(start)

    @property
    def time_scale(self) -> float:
        return self._scale

    def now(self) -> float:
        if self._scale == 1.0:
            return time.time()
        # Scaled wall time starts at the real wall time of construction, so timestamps stay plausible.
        return self._wall0 + (time.monotonic() - self._mono0) * self._scale

    def monotonic(self) -> float:
        if self._scale == 1.0 and self._start is None:
            return time.monotonic()
        start = self._mono0 if self._start is None else self._start
        return start + (time.monotonic() - self._mono0) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)

    def __repr__(self) -> str:
        start = "" if self._start is None else f", start={self._start}"
        return f"SystemClock(time_scale={self._scale}{start})"
