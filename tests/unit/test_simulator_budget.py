"""The simulator's request limit as each profile states it, its `id` list filter, and what a restore
costs in list requests (issue 14, items 2, 7, 8), through httpx.ASGITransport with a manual clock."""

from __future__ import annotations

import base64
import math

import httpx
import pytest

from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, generate_tenant
from adapters.platform import PlatformClient
from fsm import CampaignMachine
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.testing import FakeClock
from tests.fakes import MemorySink

BASE = "/api/v2/outbound"


def _sim(profile: str, campaigns: int = 6, **faults: float) -> Simulator:
    faults.setdefault("read_limit_per_s", 0)
    return Simulator(generate_tenant(campaigns, 1), SimulatorConfig(profile=profile,  # type: ignore[arg-type]
                                                                    faults=FaultConfig(**faults)),
                     clock=FakeClock())


def _http(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                             headers={"Authorization": f"Bearer {sim.mint_token()}"})


async def test_genesys_counts_every_method_300_per_minute_and_answers_its_headers() -> None:
    sim = _sim("genesys")
    ids = sorted(sim.tenant.campaigns)
    async with _http(sim) as http:
        answers: list[httpx.Response] = []
        channel = (await http.post("/api/v2/notifications/channels")).json()["id"]
        for i in range(299):
            kind = i % 4
            if kind == 0:
                answers.append(await http.get(f"{BASE}/campaigns/{ids[i % len(ids)]}"))
            elif kind == 1:
                answers.append(await http.post(f"{BASE}/campaigns/{ids[i % len(ids)]}/start"))
            elif kind == 2:
                answers.append(await http.put(f"/api/v2/notifications/channels/{channel}/subscriptions",
                                              json=[{"id": f"v2.outbound.campaigns.{ids[0]}"}]))
            else:
                answers.append(await http.get(f"{BASE}/campaigns", params={"pageSize": 1}))
            sim.advance(0.1)
        assert all(a.status_code != 429 for a in answers)
        assert [int(a.headers["inin-ratelimit-count"]) for a in answers] == list(range(2, 301))
        assert {a.headers["inin-ratelimit-allowed"] for a in answers} == {"300"}
        limited = await http.post(f"{BASE}/campaigns/{ids[0]}/stop")
        assert limited.status_code == 429
        body = limited.json()
        assert body["code"] == "too.many.requests.retry.after" and body["status"] == 429
        assert "[300] requests within [60] seconds" in body["message"]
        retry = int(limited.headers["retry-after"])
        assert 0 < retry <= 60 and limited.headers["inin-ratelimit-count"] == "300"
        assert int(limited.headers["inin-ratelimit-reset"]) == retry
        sim.advance(retry)
        again = await http.get(f"{BASE}/campaigns/{ids[0]}")
        assert again.status_code == 200


async def test_the_token_endpoint_does_not_spend_and_the_guide_counts_reads_only() -> None:
    guide = _sim("guide", read_limit_per_s=10)
    first = sorted(guide.tenant.campaigns)[0]
    async with _http(guide) as http:
        for _ in range(30):
            assert (await http.post(f"{BASE}/campaigns/{first}/stop", json={})).status_code in (202, 409)
        assert (await http.get(f"{BASE}/campaigns/{first}")).headers["inin-ratelimit-count"] == "1"
    genesys = _sim("genesys", request_limit_per_min=2)
    basic = base64_credentials(genesys)
    async with httpx.AsyncClient(transport=genesys.transport(), base_url="http://sim") as raw:
        for _ in range(5):
            token = await raw.post("/oauth/token", data={"grant_type": "client_credentials"},
                                   headers={"Authorization": basic})
            assert token.status_code == 200


def base64_credentials(sim: Simulator) -> str:
    raw = f"{sim.config.client_id}:{sim.config.client_secret}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize("profile", ["guide", "genesys"])
async def test_the_campaign_list_takes_id_filters_repeated_or_joined(profile: str) -> None:
    sim = _sim(profile, campaigns=8)
    ids = sorted(sim.tenant.campaigns)
    async with _http(sim) as http:
        repeated = await http.get(f"{BASE}/campaigns", params=[("id", ids[1]), ("id", ids[5]), ("id", "nope")])
        joined = await http.get(f"{BASE}/campaigns", params={"id": f"{ids[2]},{ids[3]}", "pageSize": 100})
        everything = await http.get(f"{BASE}/campaigns", params={"pageSize": 100})
    assert [e["id"] for e in repeated.json()["entities"]] == [ids[1], ids[5]]
    assert repeated.json()["total"] == 2
    assert [e["id"] for e in joined.json()["entities"]] == [ids[2], ids[3]]
    assert len(everything.json()["entities"]) == 8


@pytest.mark.parametrize(("profile", "campaigns"), [("guide", 250), ("genesys", 250), ("genesys", 100)])
async def test_a_restore_costs_one_list_request_per_hundred_campaigns(profile: str, campaigns: int) -> None:
    sim = _sim(profile, campaigns=campaigns)
    clock = FakeClock(auto_advance=True)
    client = PlatformClient("http://sim", sim.config.client_id, sim.config.client_secret, profile=profile,
                            clock=clock, transport=sim.transport())
    orch = Orchestrator(machine=CampaignMachine(client.supported_actions), platform=client, sink=MemorySink(),
                        clock=clock, config=OrchestratorConfig(seed=7))
    try:
        await orch.start([])
        assert len(orch.campaigns) == campaigns
    finally:
        await orch.close()
        await client.aclose()
        await clock.aclose()
    reads = [r for r in sim.traffic.select(method="GET") if r.path.startswith(BASE)]
    assert [r.path for r in reads] == [f"{BASE}/campaigns"] * math.ceil(campaigns / 100)
