"""The naive baseline of the storm bench: what a client without any of the guide's rules does.

It is the straw man the service is measured against, written as plainly as such a client usually
is. For every campaign at once, one task:

1. POSTs `stop` (no state gate, no per-dialer limit, no stagger);
2. every 2 s of simulated time, GETs the campaign (no read limiter, no backoff, no jitter, and a
   429's `Retry-After` is ignored: the next tick simply tries again);
3. if the read shows the campaign still RUNNING (its stop was refused with 409 or 500), POSTs
   `stop` again; if it shows STOPPED, it is done.

Without step 3 the campaigns whose first POST was refused would never stop, so the naive client
could only end at its cap; the retry-on-RUNNING is the least a client does to finish at all.
The run ends when every campaign was seen STOPPED, or at `cap_s` simulated seconds.

Everything it sent is counted on the client side (method x status), so the count is exact even when
the simulator's request log would be too big to fetch. It also records how far behind its 2 s
cadence it fell: on a shared machine a Python client cannot send 500 reads per simulated second
at a large time scale, so the GET count it reports is a lower bound of what it would send at its
nominal cadence (`nominal_gets`, what 2 s ticks until each campaign was seen STOPPED amount to).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import time
from dataclasses import dataclass, field

import httpx

__all__ = ["NaiveResult", "run_naive"]

_BASE = "/api/v2/outbound/campaigns"


@dataclass(slots=True)
class NaiveResult:
    campaign_ids: list[str]
    stopped_seen: int = 0
    counts: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    transport_errors: int = 0
    real_s: float = 0.0
    sim_s: float = 0.0
    capped: bool = False
    intervals: list[float] = field(default_factory=list)  # achieved sim seconds between one campaign's GETs
    seen_at: dict[str, float] = field(default_factory=dict)  # sim seconds from the first POST to STOPPED seen

    @property
    def campaigns(self) -> int:
        return len(self.campaign_ids)

    @property
    def gets(self) -> int:
        return sum(n for (method, _), n in self.counts.items() if method == "GET")

    @property
    def posts(self) -> int:
        return sum(n for (method, _), n in self.counts.items() if method == "POST")

    def status(self, status: int, method: str | None = None) -> int:
        return sum(n for (m, s), n in self.counts.items() if s == status and (method is None or m == method))

    @property
    def nominal_gets(self) -> int:
        """GETs at an exact 2 s cadence until each campaign was seen STOPPED (or the cap)."""
        return sum(int(self.seen_at.get(cid, self.sim_s) // 2.0) for cid in self.campaign_ids)


class _SimTime:
    """Simulated seconds since the storm began, on the scale the simulator runs at."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale

    async def sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.scale
        await asyncio.sleep(max(0.0, delay))


async def _token(client: httpx.AsyncClient, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    resp = await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": f"Basic {basic}"})
    resp.raise_for_status()
    token: str = resp.json()["access_token"]
    return token


async def run_naive(url: str, client_id: str, secret: str, campaign_ids: list[str], *, scale: float,
                    interval_s: float = 2.0, cap_s: float = 1800.0, max_connections: int = 4,
                    result: NaiveResult | None = None) -> NaiveResult:
    """The naive storm against the simulator at `url`; returns what it sent and saw (in `result`,
    if given, so a caller can watch it fill)."""
    result = result if result is not None else NaiveResult(list(campaign_ids))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(30.0, pool=None)) as client:
        auth = {"Authorization": f"Bearer {await _token(client, client_id, secret)}"}
        clock = _SimTime(scale)
        started = time.monotonic()

        # Only a few requests at a time go through httpx: its pool's bookkeeping grows with the
        # connections and waiters it holds, and on this machine 4 connections carry ~700 requests/s
        # where 64 carry ~250. This bounds the client's machinery, not what it asks for.
        gate = asyncio.Semaphore(max_connections)

        async def send(method: str, path: str) -> httpx.Response | None:
            try:
                async with gate:
                    resp = await client.request(method, path, headers=auth)
            except httpx.HTTPError:
                result.transport_errors += 1
                return None
            result.counts[(method, resp.status_code)] += 1
            return resp

        async def one(campaign_id: str) -> None:
            path = f"{_BASE}/{campaign_id}"
            await send("POST", f"{path}/stop")
            tick = 0.0
            last_get: float | None = None
            while True:
                tick += interval_s
                if tick > cap_s:
                    return
                await clock.sleep_until(tick)
                now = clock.now()
                if now > cap_s:
                    return
                if last_get is not None:
                    result.intervals.append(now - last_get)
                last_get = now
                resp = await send("GET", path)
                if resp is None or resp.status_code != 200:
                    continue
                state = resp.json().get("state")
                if state == "STOPPED":
                    result.seen_at[campaign_id] = clock.now()
                    return
                if state == "RUNNING":
                    await send("POST", f"{path}/stop")

        await asyncio.gather(*(one(cid) for cid in campaign_ids))
        result.real_s = time.monotonic() - started
        result.sim_s = clock.now()
    result.stopped_seen = len(result.seen_at)
    result.capped = result.stopped_seen < result.campaigns
    return result
