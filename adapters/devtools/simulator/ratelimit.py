"""The platform's request limit: at most `limit` counted requests in any sliding `window` of wall time.

One limit per profile, as each platform states it:

- guide: "The platform rate-limits outbound campaign reads to 10 requests per second per tenant":
  only outbound GETs count, a 1 s window (`FaultConfig.read_limit_per_s`);
- genesys: 300 requests per minute per client-credentials token
  (`client.credentials.token.rate.per.minute`), every method counted (GET, POST, PUT, DELETE, the
  notification-channel calls); the simulator has one OAuth client, so one limiter is that client's
  (`FaultConfig.request_limit_per_min`).

Only admitted requests fill the window. Every answer carries `inin-ratelimit-count` (requests
counted in the window, this one included), `inin-ratelimit-allowed` and `inin-ratelimit-reset`
(whole seconds until the oldest counted request leaves the window); a refused one is answered 429
with `Retry-After` as well.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "RequestLimiter"]


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    count: int
    limit: float
    reset_after: float  # seconds until the oldest request leaves the window
    window: float = 1.0

    def headers(self) -> dict[str, str]:
        reset = max(1, math.ceil(self.reset_after)) if self.count else 0
        headers = {
            "inin-ratelimit-count": str(self.count),
            "inin-ratelimit-allowed": str(int(self.limit)) if self.limit == int(self.limit) else str(self.limit),
            "inin-ratelimit-reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_after))


class RequestLimiter:
    """Sliding window over admitted requests. `limit` <= 0 disables the limit. `wall` is injectable."""

    def __init__(self, limit: Callable[[], float], wall: Callable[[], float], window: float = 1.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self._limit = limit
        self._wall = wall
        self._window = window
        self._times: deque[float] = deque()

    @property
    def window(self) -> float:
        return self._window

    def admit(self) -> Admission:
        now = self._wall()
        while self._times and self._times[0] <= now - self._window:
            self._times.popleft()
        limit = self._limit()
        reset = (self._times[0] + self._window - now) if self._times else 0.0
        if limit > 0 and len(self._times) >= limit:
            return Admission(False, len(self._times), limit, reset, self._window)
        self._times.append(now)
        reset = self._times[0] + self._window - now
        return Admission(True, len(self._times), limit, reset, self._window)
