"""The genesys simulator's progress through a contact list: off keeps the position, on continues from
it, the list's end is `complete`, a recycle (DELETE .../progress) goes back to record one, and the
platform can force a campaign off. Through httpx.ASGITransport with a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, parse_tenant
from adapters.devtools.simulator.engine import Timing
from fsm.testing import FakeClock
from schemas.platform import GenesysCampaignProgress
from schemas.types import CampaignState

S = CampaignState
BASE = "/api/v2/outbound"
# The keys of the SDK's `CampaignProgress.attribute_map` (PureCloudPlatformClientV2 269.0.0).
SDK_CAMPAIGN_PROGRESS_KEYS = {"campaign", "contactList", "numberOfContactsCalled", "numberOfContactsMessaged",
                              "totalNumberOfContacts", "percentage", "numberOfContactsSkipped"}

TENANT = {
    "dialers": [{"id": "d1"}],
    "contactLists": [{"id": "l1", "name": "Ten", "size": 10}],
    "campaigns": [{"id": "c1", "dialerType": "POWER", "dialerId": "d1", "contactListId": "l1"}],
}


def _sim(profile: str = "genesys") -> Simulator:
    config = SimulatorConfig(profile=profile, faults=FaultConfig(read_limit_per_s=0),  # type: ignore[arg-type]
                             timing=Timing(records_per_second=1.0))
    return Simulator(parse_tenant(TENANT), config, clock=FakeClock())


@pytest.fixture
def sim() -> Simulator:
    return _sim()


@pytest.fixture
async def xc(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                                 headers={"Authorization": f"Bearer {sim.mint_token()}"}) as client:
        yield client


async def _progress(xc: httpx.AsyncClient) -> dict[str, object]:
    answer = await xc.get(f"{BASE}/campaigns/c1/progress")
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


async def _status(xc: httpx.AsyncClient) -> str:
    status: str = (await xc.get(f"{BASE}/campaigns/c1")).json()["campaignStatus"]
    return status


async def test_progress_is_shaped_as_the_sdk_model(sim: Simulator, xc: httpx.AsyncClient) -> None:
    body = await _progress(xc)
    assert set(body) == SDK_CAMPAIGN_PROGRESS_KEYS
    progress = GenesysCampaignProgress.model_validate(body)
    assert (progress.number_of_contacts_called, progress.total_number_of_contacts, progress.percentage) == (0, 10, 0)
    assert progress.campaign is not None and progress.campaign.id == "c1"
    assert progress.contact_list is not None and progress.contact_list.id == "l1"


async def test_off_keeps_the_position_and_on_continues_from_it(sim: Simulator, xc: httpx.AsyncClient) -> None:
    await xc.post(f"{BASE}/campaigns/c1/start")
    sim.advance(2 + 4)  # a POWER start takes 2 s; then 4 records
    assert sim.state_of("c1") is S.RUNNING and sim.contacts_called("c1") == 4
    await xc.post(f"{BASE}/campaigns/c1/stop")
    sim.advance(30)
    assert await _status(xc) == "off"
    assert sim.contacts_called("c1") == 4, "off is Genesys' pause: the position is kept"
    await xc.post(f"{BASE}/campaigns/c1/start")
    sim.advance(2 + 3)
    assert sim.contacts_called("c1") == 7, "turned on again it continues at the next record"
    assert (await _progress(xc))["percentage"] == 70


async def test_the_end_of_the_list_is_complete_and_a_start_begins_again(sim: Simulator,
                                                                        xc: httpx.AsyncClient) -> None:
    await xc.post(f"{BASE}/campaigns/c1/start")
    sim.advance(2 + 10)
    assert await _status(xc) == "complete"
    assert sim.state_of("c1") is S.STOPPED and sim.contacts_called("c1") == 10
    await xc.post(f"{BASE}/campaigns/c1/start")
    assert await _status(xc) == "on"
    sim.advance(2 + 1)
    assert sim.contacts_called("c1") == 1, "a completed campaign turned on starts at record one"


async def test_a_recycle_goes_back_to_record_one_without_turning_anything_on(sim: Simulator,
                                                                             xc: httpx.AsyncClient) -> None:
    await xc.post(f"{BASE}/campaigns/c1/start")
    sim.advance(2 + 6)
    await xc.post(f"{BASE}/campaigns/c1/stop")
    sim.advance(30)
    recycled = await xc.delete(f"{BASE}/campaigns/c1/progress")
    assert recycled.status_code == 204
    assert sim.contacts_called("c1") == 0 and await _status(xc) == "off"
    again = await xc.delete(f"{BASE}/campaigns/c1/progress")
    assert again.status_code == 400 and "5 s" in again.json()["message"]  # at most one every five seconds
    sim.advance(5)
    assert (await xc.delete(f"{BASE}/campaigns/c1/progress")).status_code == 204
    assert [r.action for r in sim.traffic.records if r.method == "DELETE"] == ["recycle"] * 3


async def test_the_platform_can_force_a_campaign_off(sim: Simulator, xc: httpx.AsyncClient) -> None:
    await xc.post(f"{BASE}/campaigns/c1/start")
    sim.advance(2 + 3)
    admin = await xc.post("/admin/campaigns/c1/force-off")
    assert admin.status_code == 200 and admin.json()["campaignStatus"] == "forced_off"
    assert await _status(xc) == "forced_off" and sim.state_of("c1") is S.STOPPED
    assert sim.contacts_called("c1") == 3
    await xc.post(f"{BASE}/campaigns/c1/start")
    assert await _status(xc) == "on"


async def test_the_guide_profile_has_no_progress() -> None:
    sim = _sim("guide")
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                                 headers={"Authorization": f"Bearer {sim.mint_token()}"}) as client:
        assert (await client.get(f"{BASE}/campaigns/c1/progress")).status_code in (404, 405)
        assert (await client.delete(f"{BASE}/campaigns/c1/progress")).status_code in (404, 405)
