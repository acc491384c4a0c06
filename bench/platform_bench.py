"""Bench: 500 campaigns polled concurrently through the platform client against the simulator.

Every campaign has its own poller reading its campaign in a loop for `--seconds` of real time, so
demand far exceeds the tenant's 10 reads/s: the client's `RequestBudget` decides who reads when. The
numbers come from the simulator's traffic record (what arrived at the platform, by wall time), not
from the client's own count:

- `reads_per_s_peak`: the most reads that arrived within any 1 s window (target <= 10.0);
- `reads_per_s_mean`: reads per second over the run (target >= 9.0: strict, but not wasteful);
- `http_429`: reads the platform refused for rate (target 0);
- `http_5xx_unretried`: 5xx answers the client handed to a caller after its retries (client stat).

Fairness is shown too: with 500 keys and ~200 grants, round-robin reads distinct campaigns
before reading any campaign twice.

Run: `.venv/bin/python bench/platform_bench.py [--campaigns 500] [--seconds 20] [--profile guide]`.
The last line printed is one JSON object with the four figures above (and a few more).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import sys
import time
from typing import Any

from adapters.clock import SystemClock
from adapters.devtools.simulator.app import SimulatorConfig
from adapters.devtools.simulator.server import run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.platform import PlatformClient
from fsm.ports import PlatformError
from fsm.request_budget import RequestBudget
from fsm.tasks import cancel_and_wait


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--campaigns", type=int, default=500)
    parser.add_argument("--dialers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="real seconds of polling")
    parser.add_argument("--profile", choices=["guide", "genesys"], default="guide")
    parser.add_argument("--rate", type=int, default=10, help="the client's reads per second")
    parser.add_argument("--margin", type=float, default=0.05, help="limiter safety margin, seconds")
    args = parser.parse_args(argv)
    if args.campaigns < 1 or args.dialers < 1 or args.seconds <= 0 or args.rate < 1 or args.margin < 0:
        parser.error("campaigns, dialers, rate >= 1; seconds > 0; margin >= 0")
    return args


async def _poller(client: PlatformClient, campaign_id: str, errors: collections.Counter[str]) -> None:
    while True:
        try:
            await client.get_campaign(campaign_id)
        except PlatformError as exc:
            errors[type(exc).__name__] += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = SimulatorConfig(profile=args.profile)
    tenant = generate_tenant(args.campaigns, args.dialers)
    async with run_simulator(tenant, config) as (url, sim):
        limiter = RequestBudget(SystemClock(), limit=args.rate, margin=args.margin)
        client = PlatformClient(url, config.client_id, config.client_secret, profile=args.profile,
                                budget=limiter)
        errors: collections.Counter[str] = collections.Counter()
        try:
            await client.tokens.token()  # the token fetch is not a read; keep it out of the window
            sim.traffic.clear()
            started = time.monotonic()
            pollers = [asyncio.create_task(_poller(client, cid, errors), name=f"poll-{cid}")
                       for cid in sorted(sim.tenant.campaigns)]
            await asyncio.sleep(args.seconds)
            await cancel_and_wait(*pollers)
            elapsed = time.monotonic() - started
        finally:
            await client.aclose()
            await limiter.aclose()
        reads = [r for r in sim.traffic.records if r.kind == "read"]
        per_campaign = collections.Counter(r.campaign_id for r in reads if r.status == 200)
        return {
            "profile": args.profile,
            "campaigns": args.campaigns,
            "seconds": round(elapsed, 2),
            "reads": len(reads),
            "reads_per_s_peak": float(sim.traffic.reads_per_second_peak()),
            "reads_per_s_mean": round(len(reads) / elapsed, 3),
            "reads_per_s_mean_span": round(sim.traffic.reads_per_second_mean(), 3),
            "http_429": sum(1 for r in reads if r.status == 429),
            "http_5xx": sum(1 for r in reads if r.status >= 500),
            "http_5xx_unretried": client.stats.http_5xx_unretried,
            "client_errors": dict(errors),
            "campaigns_read": len(per_campaign),
            "max_reads_one_campaign": max(per_campaign.values(), default=0),
        }


def _table(result: dict[str, Any]) -> str:
    targets = {"reads_per_s_peak": "<= 10.0", "reads_per_s_mean": ">= 9.0", "http_429": "== 0",
               "http_5xx_unretried": "== 0"}
    rows = [(k, str(v), targets.get(k, "")) for k, v in result.items()]
    width = max(len(k) for k, _, _ in rows)
    vwidth = max(len(v) for _, v, _ in rows)
    lines = [f"{'metric':<{width}}  {'value':>{vwidth}}  target", "-" * (width + vwidth + 12)]
    lines += [f"{k:<{width}}  {v:>{vwidth}}  {t}" for k, v, t in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR)
    args = _parse(argv)
    result = asyncio.run(run(args))
    print(_table(result))
    ok = (result["reads_per_s_peak"] <= 10.0 and result["reads_per_s_mean"] >= 9.0 and result["http_429"] == 0
          and result["http_5xx_unretried"] == 0)
    summary = {k: result[k] for k in ("reads_per_s_peak", "reads_per_s_mean", "http_429", "http_5xx_unretried")}
    summary.update(reads=result["reads"], campaigns_read=result["campaigns_read"],
                   max_reads_one_campaign=result["max_reads_one_campaign"], targets_met=ok)
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
