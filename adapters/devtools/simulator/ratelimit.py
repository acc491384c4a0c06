"""The tenant-wide read limit: at most `limit` outbound GETs in any sliding 1 s of wall time.

The guide: "The platform rate-limits outbound campaign reads to 10 requests per second per tenant."
Only admitted reads fill the window; a refused one is answered 429 with `Retry-After` and the
`inin-ratelimit-*` headers a Genesys client reads.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "ReadLimiter"]


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    count: int
    limit: float
    reset_after: float  # seconds until the oldest read leaves the window

    def headers(self) -> dict[str, str]:
        reset = max(1, math.ceil(self.reset_after)) if self.count else 0
        headers = {
            "inin-ratelimit-count": str(self.count),
            "inin-ratelimit-allowed": str(int(self.limit)) if self.limit == int(self.limit) else str(self.limit),
            "inin-ratelimit-reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_after)))
        return headers


class ReadLimiter:
    """Sliding window over admitted reads. `limit` <= 0 disables the limit. `wall` is injectable."""

    def __init__(self, limit: Callable[[], float], wall: Callable[[], float], window: float = 1.0) -> None:
        self._limit = limit
        self._wall = wall
        self._window = window
        self._times: deque[float] = deque()

    def admit(self) -> Admission:
        now = self._wall()
        while self._times and self._times[0] <= now - self._window:
            self._times.popleft()
        limit = self._limit()
        reset = (self._times[0] + self._window - now) if self._times else 0.0
        if limit > 0 and len(self._times) >= limit:
            return Admission(False, len(self._times), limit, reset)
        self._times.append(now)
        reset = self._times[0] + self._window - now
        return Admission(True, len(self._times), limit, reset)
