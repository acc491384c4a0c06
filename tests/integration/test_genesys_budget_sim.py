"""The genesys request budget against the simulator over real HTTP (issue 14, item 2): a burst of
every method never draws a 429 and never puts more than 300 requests into any 60 s window at the
platform. Time is scaled (the simulator's limit runs on its simulated clock, `rate_clock="sim"`, and
the client's budget on a clock with the same scale), so a minute passes in six seconds."""

from __future__ import annotations

import asyncio
import bisect

import pytest

from adapters.clock import SystemClock
from adapters.devtools.simulator.app import SimulatorConfig
from adapters.devtools.simulator.faults import FaultConfig
from adapters.devtools.simulator.server import run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.platform import PlatformClient
from fsm.ports import PlatformError
from schemas.types import Action

pytestmark = pytest.mark.integration

SCALE = 10.0


def _most_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


async def test_a_burst_of_every_method_stays_within_300_per_minute_without_a_429() -> None:
    config = SimulatorConfig(profile="genesys", rate_clock="sim", faults=FaultConfig(read_limit_per_s=0))
    async with run_simulator(generate_tenant(40, 4), config, time_scale=SCALE) as (url, sim):
        ids = sorted(sim.tenant.campaigns)
        async with PlatformClient(url, config.client_id, config.client_secret, profile="genesys",
                                  clock=SystemClock(SCALE)) as client:
            assert (client.budget.limit, client.budget.window) == (300, 60.0)
            channel = await client.create_notification_channel()

            async def one(i: int) -> None:
                campaign = ids[i % len(ids)]
                try:
                    match i % 5:
                        case 0 | 1:
                            await client.get_campaign(campaign)
                        case 2:
                            await client.get_campaigns(ids[:25])
                        case 3:
                            await client.send_action(campaign, Action.START if i % 2 else Action.STOP)
                        case _:
                            await client.set_channel_topics(channel.id, [f"v2.outbound.campaigns.{campaign}"],
                                                            replace=i % 2 == 0)
                except PlatformError as exc:
                    assert exc.status != 429, exc  # refusals of the engine (409/400) are fine; 429s are not

            await asyncio.gather(*(one(i) for i in range(450)))
            assert client.stats.http_429 == 0
    served = [r for r in sim.traffic.select() if r.kind != "auth"]
    assert len(served) == 451
    assert not [r for r in served if r.status == 429]
    assert {r.method for r in served} == {"GET", "POST", "PUT"}
    times = [r.sim_time for r in served]
    worst = _most_in_window(times, 60.0)
    assert worst <= 300, f"{worst} requests in one simulated minute"
    assert max(times) - min(times) > 60.0, "451 requests need more than a minute: the budget held them"
