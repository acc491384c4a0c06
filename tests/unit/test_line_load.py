"""genesys load from the platform (issue 14, item 5), and the simulator's active-campaign cap.

The translation of `/linedistribution` and `/stats` `linesUtilization`, the client's choice of route
(and the read limiter key: the edge group, not the campaign), and the simulator serving both from
the group's lines and the calls of all its campaigns.
"""

from __future__ import annotations

import httpx
import pytest

from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, parse_tenant
from adapters.platform.profiles import dialer_load_from_payload, line_distribution_load
from fsm.ports import DialerLoad, PlatformCapReached, PlatformError
from fsm.testing import FakeClock
from schemas.platform import GenesysCampaignStats, GenesysLineDistribution
from schemas.types import Action, CampaignState
from tests.unit.test_platform_client import FakePlatform, _client, _error

S = CampaignState
BASE = "/api/v2/outbound"

DISTRIBUTION = {"campaign": {"id": "c1"}, "maxOutboundLineCount": 450, "maxLineUtilization": 0.75,
                "availableOutboundLines": 90, "reservedLines": 0, "campaignsWithReservedLines": [],
                "campaignsWithDynamicallyAllocatedLines": []}


def test_line_distribution_is_the_whole_group_load() -> None:
    assert line_distribution_load(DISTRIBUTION, dialer_id="eg1") == DialerLoad("eg1", 360, 450)
    assert line_distribution_load(DISTRIBUTION, dialer_id="eg1", capacity=400) == DialerLoad("eg1", 360, 400)
    full = {**DISTRIBUTION, "availableOutboundLines": 0}
    assert line_distribution_load(full, dialer_id="eg1").active_calls == 450
    assert line_distribution_load({"maxOutboundLineCount": 0, "availableOutboundLines": 0}, dialer_id="eg1") \
        == DialerLoad("eg1", 0, None), "no lines known: never defers"
    assert line_distribution_load({}, dialer_id="eg1") == DialerLoad("eg1", 0, None)


def test_stats_lines_utilization_counts_against_the_configured_capacity() -> None:
    stats = {"outstandingCalls": 3, "linesUtilization": {"assignedOutboundLines": 3,
                                                         "totalAvailableOutboundLines": 20}}
    assert dialer_load_from_payload("genesys", stats, dialer_id="eg1", capacity=100) == DialerLoad("eg1", 80, 100)
    # Without a capacity, only the campaign's own calls: a lower bound that never defers.
    assert dialer_load_from_payload("genesys", stats, dialer_id="eg1") == DialerLoad("eg1", 3, None)


@pytest.fixture
def fake() -> FakePlatform:
    return FakePlatform(FakeClock(start=1000.0, auto_advance=True))


async def test_the_client_reads_the_line_distribution_keyed_by_the_edge_group(fake: FakePlatform) -> None:
    fake.always("GET", f"{BASE}/campaigns/c1/linedistribution", httpx.Response(200, json=DISTRIBUTION))
    async with _client(fake, "genesys", dialer_capacity={"eg2": 10}) as client:
        keys: list[str] = []
        spend = client.budget.spend

        def spy(key: str, *, priority: bool = False):  # type: ignore[no-untyped-def]
            keys.append(key)
            return spend(key, priority=priority)

        client.budget.spend = spy  # type: ignore[method-assign]
        assert await client.get_dialer_load("eg1", "c1") == DialerLoad("eg1", 360, 450)
        assert keys == ["dialer:eg1"]
    assert fake.sent("GET", f"{BASE}/campaigns/c1/stats") == []


async def test_a_platform_without_line_distribution_is_read_from_stats_from_then_on(fake: FakePlatform) -> None:
    fake.always("GET", f"{BASE}/campaigns/c1/stats", httpx.Response(200, json={
        "outstandingCalls": 2, "linesUtilization": {"totalAvailableOutboundLines": 15}}))
    async with _client(fake, "genesys", dialer_capacity={"eg1": 60}) as client:
        assert await client.get_dialer_load("eg1", "c1") == DialerLoad("eg1", 45, 60)
        assert await client.get_dialer_load("eg1", "c1") == DialerLoad("eg1", 45, 60)
    assert len(fake.sent("GET", f"{BASE}/campaigns/c1/linedistribution")) == 1, "asked once, then not again"


async def test_an_unusable_distribution_is_a_platform_error(fake: FakePlatform) -> None:
    fake.always("GET", f"{BASE}/campaigns/c1/linedistribution",
                httpx.Response(200, json={"maxOutboundLineCount": "many"}))
    async with _client(fake, "genesys") as client:
        with pytest.raises(PlatformError, match="dialer 'eg1': unusable payload"):
            await client.get_dialer_load("eg1", "c1")


async def test_a_start_refused_for_the_cap_is_named_and_an_invalid_transition_is_not(fake: FakePlatform) -> None:
    fake.script("POST", f"{BASE}/campaigns/c1/start",
                _error(400, "outbound.campaign.active.limit.exceeded",
                       "Unable to start campaign: the organization has reached its maximum of 50 active campaigns"),
                _error(400, "bad.request", "Invalid transition from <COMPLETE> to <ON>"))
    async with _client(fake, "genesys") as client:
        with pytest.raises(PlatformCapReached):
            await client.send_action("c1", Action.START)
        with pytest.raises(PlatformError) as caught:
            await client.send_action("c1", Action.START)
        assert not isinstance(caught.value, PlatformCapReached)


# --- the simulator ---------------------------------------------------------------------------------

TENANT = {
    "dialers": [{"id": "eg1", "licensedCapacity": 600, "maxLineUtilization": 0.75}, {"id": "eg2"}],
    "contactLists": [{"id": "l1"}],
    "campaigns": [
        {"id": "a", "dialerType": "POWER", "dialerId": "eg1", "contactListId": "l1", "state": "RUNNING",
         "activeCalls": 100},
        {"id": "b", "dialerType": "POWER", "dialerId": "eg1", "contactListId": "l1", "state": "RUNNING",
         "activeCalls": 50},
        {"id": "c", "dialerType": "POWER", "dialerId": "eg1", "contactListId": "l1", "activeCalls": 70},
        {"id": "d", "dialerType": "POWER", "dialerId": "eg2", "contactListId": "l1", "state": "RUNNING",
         "activeCalls": 10},
    ],
}


def _sim(cap: int | None = None) -> Simulator:
    return Simulator(parse_tenant(TENANT), SimulatorConfig(profile="genesys", active_campaign_cap=cap,
                                                           faults=FaultConfig(read_limit_per_s=0)),
                     clock=FakeClock())


def _http(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                             headers={"Authorization": f"Bearer {sim.mint_token()}"})


async def test_the_simulator_computes_line_distribution_from_the_group() -> None:
    sim = _sim()
    async with _http(sim) as http:
        raw = (await http.get(f"{BASE}/campaigns/c/linedistribution")).json()
        only = (await http.get(f"{BASE}/campaigns/c/linedistribution",
                               params={"includeOnlyActiveCampaigns": "true"})).json()
        stats = GenesysCampaignStats.model_validate((await http.get(f"{BASE}/campaigns/a/stats")).json())
    d = GenesysLineDistribution.model_validate(raw)
    # 600 lines x 75 % = 450 for outbound; 150 calls of campaigns a and b in use (c is off: none).
    assert (d.max_outbound_line_count, d.available_outbound_lines, d.max_line_utilization) == (450, 300, 0.75)
    assert raw["campaign"]["id"] == "c"
    assert [e["campaign"]["id"] for e in raw["campaignsWithDynamicallyAllocatedLines"]] == ["a", "b", "c"]
    assert [e["campaign"]["id"] for e in only["campaignsWithDynamicallyAllocatedLines"]] == ["a", "b"]
    assert stats.outstanding_calls == 100
    assert stats.lines_utilization is not None
    assert (stats.lines_utilization.assigned_outbound_lines,
            stats.lines_utilization.total_available_outbound_lines) == (100, 300)


async def test_the_simulator_refuses_a_start_past_its_cap_and_only_then() -> None:
    sim = _sim(cap=3)  # a, b and d are on
    async with _http(sim) as http:
        refused = await http.post(f"{BASE}/campaigns/c/start")
        assert refused.status_code == 400
        assert refused.json()["code"] == "outbound.campaign.active.limit.exceeded"
        assert "maximum of 3 active campaigns" in refused.json()["message"]
        assert sim.state_of("c") is S.STOPPED
        sim.set_state("d", S.STOPPED)
        assert (await http.post(f"{BASE}/campaigns/c/start")).status_code == 202
    assert _sim().engine.active_campaign_cap is None


async def test_a_start_by_put_refused_for_the_cap_is_named_too(fake: FakePlatform) -> None:
    campaign = {"id": "c1", "version": 3, "campaignStatus": "off", "dialingMode": "power", "edgeGroup": {"id": "eg1"}}
    fake.always("GET", f"{BASE}/campaigns/c1", httpx.Response(200, json=campaign))
    fake.script("PUT", f"{BASE}/campaigns/c1",
                _error(400, "outbound.campaign.active.limit.exceeded", "maximum of 50 active campaigns reached"))
    async with _client(fake, "genesys", genesys_status_via_put=True) as client:
        with pytest.raises(PlatformCapReached):
            await client.send_action("c1", Action.START)
